"""SLURM preemption / time-limit handling for training runs (used by train.fit; docs/sweeps.md).

One mechanism requeues a job: submitit's. The SLURM launcher (conf/hydra/launcher/slurm.yaml) asks Slurm
for USR2 ``signal_delay_s`` before the time limit; ``scancel --signal=USR2`` does the same by hand and
preemption (with ``PreemptMode=REQUEUE`` and a grace time) likewise. submitit's USR2 handler pickles the job
again, runs ``scontrol requeue`` and exits; the requeued job calls ``train.run`` again, which resumes from
``checkpoints/last.ckpt``.

Two things are added here:

* ``RequeueCheckpoint``: under SLURM, USR2 only sets a flag; at the end of the current optimiser step
  ``last.ckpt`` is written (atomically) and the signal is then handed to the handler that was there before
  (submitit's). So a requeued run loses no steps, instead of up to ``trainer.last_ckpt_every_n_steps``.
  A USR2 that arrives outside ``fit`` (startup, baselines) goes straight to submitit: it resumes from the
  last periodic checkpoint.
* ``cluster_plugins``: Lightning's ``SLURMEnvironment`` with ``auto_requeue=False``. Lightning's default
  (``auto_requeue=True``) installs its own SIGUSR1 handler that saves ``hpc_ckpt_*.ckpt`` in the run
  directory and calls ``scontrol requeue`` itself; with a job script that asks for SIGUSR1 that would
  requeue outside submitit (whose pickled job would then be stale) and leave a second kind of checkpoint
  that Lightning would prefer when no ckpt_path is given. Rank/world-size detection from SLURM is kept.
"""
from __future__ import annotations

import logging
import os
import signal
import threading

import lightning as L

log = logging.getLogger("icl_hybrids")

REQUEUE_SIGNAL = signal.SIGUSR2  # submitit's SlurmJobEnvironment.USR_SIG


def under_slurm() -> bool:
    return "SLURM_JOB_ID" in os.environ


def cluster_plugins() -> list:
    """Trainer ``plugins``: under SLURM, its environment without Lightning's own auto-requeue."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


class RequeueCheckpoint(L.Callback):
    """On ``signum`` (USR2): write last.ckpt at the next step boundary, then run the previous handler."""

    def __init__(self, checkpoint, signum: int = REQUEUE_SIGNAL):
        self.checkpoint, self.signum = checkpoint, signum
        self._prev = None
        self._installed = False
        self.pending: tuple | None = None

    # signal plumbing ----------------------------------------------------------------------------
    def _handler(self, signum, frame):
        if self.pending is None:
            log.warning("received %s: saving last.ckpt at the end of this step, then requeueing",
                        signal.Signals(signum).name)
        self.pending = (signum, frame)

    def _install(self):
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._prev = signal.getsignal(self.signum)
            signal.signal(self.signum, self._handler)
            self._installed = True

    def _restore(self):
        if self._installed:
            signal.signal(self.signum, self._prev if self._prev is not None else signal.SIG_DFL)
            self._installed = False

    # Lightning hooks ----------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        self._install()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.pending is None:
            return
        signum, frame = self.pending
        self.checkpoint.save(trainer, "last.ckpt")
        log.warning("saved last.ckpt at step %d; handing %s over", trainer.global_step, signal.Signals(signum).name)
        prev = self._prev
        self._restore()
        self.pending = None
        if callable(prev):
            prev(signum, frame)  # submitit: checkpoint the job, scontrol requeue, sys.exit
        elif prev == signal.SIG_IGN:
            return
        else:  # no handler was installed: the default action of USR2 is to terminate
            raise SystemExit(128 + int(signum))

    def on_train_end(self, trainer, pl_module):
        # Finished: a signal that came during the last step is moot (the job completes now).
        if self.pending is not None:
            log.warning("training finished before the requeue signal was handled; not requeueing")
            self.pending = None
        self._restore()

    def on_exception(self, trainer, pl_module, exception):
        self._restore()


def requeue_callbacks(checkpoint) -> list:
    """The callbacks ``train.fit`` adds: [RequeueCheckpoint] under SLURM, else none."""
    return [RequeueCheckpoint(checkpoint)] if under_slurm() else []
