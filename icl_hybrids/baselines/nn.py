"""Two-layer ReLU network trained per (prompt, prefix) by Adam: Garg et al.'s ``GDModel``.

All ``B*(N-1)`` networks (one per prompt and prefix length ``i >= 1``) are trained at once
with hand-written batched forward/backward passes (gradients written into preallocated
buffers) and Adam over the stacked parameters (``torch._fused_adam_``, else ``torch._foreach`` ops);
Adam is elementwise, so this is exactly independent Adam per network. Position 0 predicts 0.
"""

from __future__ import annotations

import math

import torch

from .base import Baseline, check_inputs

__all__ = ["TwoLayerNNBaseline"]


class _BatchedAdam:
    """Adam over a few stacked parameter tensors, as ``torch.optim.Adam`` computes it.

    Calls ``torch._fused_adam_`` (one pass over memory, no optimizer bookkeeping per step)
    where the device has the kernel, else the same update with ``torch._foreach`` ops
    (``torch.optim.Adam``'s foreach algorithm).
    """

    def __init__(self, params, grads, lr, betas, eps):
        self.params, self.grads = list(params), list(grads)
        self.lr, self.beta1, self.beta2, self.eps = float(lr), float(betas[0]), float(betas[1]), float(eps)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        dev = self.params[0].device
        self.steps = [torch.zeros((), dtype=torch.float32, device=dev) for _ in self.params]
        self.t = 0
        self.fused = hasattr(torch, "_fused_adam_")
        if self.fused:
            try:  # probe the kernel on this device/dtype (no-op update with lr=0 on zero grads)
                z = [torch.zeros(1, dtype=p.dtype, device=dev) for p in self.params[:1]]
                torch._fused_adam_(z, [torch.zeros_like(z[0])], [torch.zeros_like(z[0])],
                                   [torch.zeros_like(z[0])], [], [torch.ones((), device=dev)],
                                   lr=0.0, beta1=self.beta1, beta2=self.beta2, weight_decay=0.0,
                                   eps=self.eps, amsgrad=False, maximize=False)
            except (RuntimeError, NotImplementedError, TypeError):
                self.fused = False

    def step(self):
        self.t += 1
        if self.fused:
            torch._foreach_add_(self.steps, 1)
            torch._fused_adam_(self.params, self.grads, self.m, self.v, [], self.steps,
                               lr=self.lr, beta1=self.beta1, beta2=self.beta2, weight_decay=0.0,
                               eps=self.eps, amsgrad=False, maximize=False)
            return
        # torch.optim.Adam's foreach update (capturable=False)
        t = self.t
        torch._foreach_lerp_(self.m, self.grads, 1 - self.beta1)
        torch._foreach_mul_(self.v, self.beta2)
        torch._foreach_addcmul_(self.v, self.grads, self.grads, 1 - self.beta2)
        bc1 = 1 - self.beta1 ** t
        bc2_sqrt = math.sqrt(1 - self.beta2 ** t)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(self.params, self.m, denom, -self.lr / bc1)


class TwoLayerNNBaseline(Baseline):
    """Garg's ``GDModel(NeuralNetwork, hidden_size=100, opt_alg="adam")``.

    * Net: ``Linear(d, hidden) -> ReLU -> Linear(hidden, 1)``, initialised like
      ``torch.nn.Linear`` (weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``).
    * Training: ``n_steps`` Adam steps (``lr``, ``betas``, ``eps``) on the mean squared error
      of a minibatch of ``min(batch_size, i)`` context points drawn without replacement
      from the prefix ``0..i-1``; the prediction is the net's output at ``x_i``.
    * Each network has its own loss and its own minibatch indices (Garg shares the indices
      across the prompts of a batch and averages the loss over prompts, which only
      rescales the gradients; Adam is invariant to that up to ``eps``).
    * Reproducible: initial weights and minibatch indices come from a ``torch.Generator``
      (``generator`` argument of ``__call__``, else one seeded with ``seed``); results are
      identical for the same seed, shapes, dtype, device and ``chunk_size``.
    """

    def __init__(self, hidden_size: int = 100, n_steps: int = 1000, lr: float = 5e-3,
                 batch_size: int = 1, betas=(0.9, 0.999), eps: float = 1e-8, seed: int = 0,
                 dtype: torch.dtype = torch.float32, chunk_size: int = 16384,
                 n_dims: int | None = None):
        self.hidden_size = int(hidden_size)
        self.n_steps = int(n_steps)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.seed = int(seed)
        self.dtype = dtype
        self.chunk_size = int(chunk_size)
        self.name = "two_layer_nn"

    # ------------------------------------------------------------------ building blocks
    def init_params(self, n_nets: int, d: int, generator: torch.Generator, device=None, dtype=None):
        """``nn.Linear``-style init for ``n_nets`` networks: dict of W1 [P,d,H], b1 [P,H], W2 [P,H], b2 [P]."""
        dtype = dtype or self.dtype
        H = self.hidden_size

        def u(shape, fan_in):
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            r = torch.rand(shape, generator=generator, device=device, dtype=dtype)
            return (2 * r - 1) * bound

        return {"W1": u((n_nets, d, H), d), "b1": u((n_nets, H), d),
                "W2": u((n_nets, H), H), "b2": u((n_nets,), H)}

    def sample_indices(self, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Minibatch indices of one step: ``[P, bs]`` distinct indices ``< lengths`` (``bs = min(batch_size, max(lengths))``).

        Column ``k`` is valid for network ``p`` iff ``k < min(batch_size, lengths[p])``.
        """
        P = lengths.shape[0]
        dev = lengths.device
        if self.batch_size == 1:
            r = torch.rand(P, 1, generator=generator, device=dev, dtype=torch.float64)
            return (r * lengths.unsqueeze(-1)).long().clamp_max(lengths.unsqueeze(-1) - 1)
        L = int(lengths.max())
        bs = min(self.batch_size, L)
        keys = torch.rand(P, L, generator=generator, device=dev, dtype=torch.float64)
        keys = keys.masked_fill(torch.arange(L, device=dev)[None] >= lengths[:, None], 2.0)
        return keys.topk(bs, dim=-1, largest=False).indices

    def fit_predict(self, X, Y, lengths, x_test, params, generator=None, indices=None):
        """Train ``P`` nets on ``(X [P,L,d], Y [P,L])`` restricted to the first ``lengths[p]`` rows.

        ``indices`` (optional) is a list of ``n_steps`` index tensors as returned by
        :meth:`sample_indices`; otherwise they are drawn from ``generator`` step by step.
        ``params`` is modified in place. Returns the predictions at ``x_test [P, d]``.
        """
        P, L, d = X.shape
        W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
        ps = [W1, b1, W2, b2]
        gW1, gb1, gW2, gb2 = grads = [torch.zeros_like(p) for p in ps]
        opt = _BatchedAdam(ps, grads, self.lr, self.betas, self.eps)  # grads written in place below
        rows = torch.arange(P, device=X.device).unsqueeze(-1)
        bs_eff = lengths.clamp_max(self.batch_size).to(X.dtype)  # [P]
        with torch.no_grad():
            for t in range(self.n_steps):
                idx = indices[t] if indices is not None else self.sample_indices(lengths, generator)
                k = idx.shape[1]
                xb = X[rows, idx]  # [P, k, d]
                yb = Y[rows, idx]  # [P, k]
                hpre = torch.baddbmm(b1.unsqueeze(1), xb, W1)  # [P, k, H]
                h = hpre.clamp_min(0)
                out = torch.bmm(h, W2.unsqueeze(-1)).squeeze(-1) + b2.unsqueeze(-1)  # [P, k]
                dout = (out - yb).mul_(2.0 / bs_eff.unsqueeze(-1))  # d(mean sq err)/d out
                if self.batch_size > 1:
                    valid = torch.arange(k, device=X.device)[None] < bs_eff[:, None]
                    dout = dout * valid
                torch.bmm(dout.unsqueeze(1), h, out=gW2.unsqueeze(1))
                torch.sum(dout, 1, out=gb2)
                dh = dout.unsqueeze(-1) * W2.unsqueeze(1) * (hpre > 0)
                torch.bmm(xb.transpose(1, 2), dh, out=gW1)
                torch.sum(dh, 1, out=gb1)
                opt.step()
        hpre = torch.baddbmm(b1.unsqueeze(1), x_test.unsqueeze(1), W1).squeeze(1)
        return (hpre.clamp_min(0) * W2).sum(-1) + b2

    # ------------------------------------------------------------------ public call
    def __call__(self, xs, ys, generator: torch.Generator | None = None):
        check_inputs(xs, ys)
        B, N, d = xs.shape
        out = torch.zeros(B, N, dtype=self.dtype, device=xs.device)
        if N <= 1 or B == 0:
            return out.to(ys.dtype)
        if generator is None:
            generator = torch.Generator(device=xs.device).manual_seed(self.seed)
        x = xs.to(self.dtype)
        y = ys.to(self.dtype)
        # problem p = (b, i), i = 1..N-1, flattened prompt-major
        b_of = torch.arange(B, device=xs.device).repeat_interleave(N - 1)
        i_of = torch.arange(1, N, device=xs.device).repeat(B)
        preds = torch.empty(B * (N - 1), dtype=self.dtype, device=xs.device)
        for s in range(0, B * (N - 1), self.chunk_size):
            sl = slice(s, min(B * (N - 1), s + self.chunk_size))
            bb, ii = b_of[sl], i_of[sl]
            params = self.init_params(bb.numel(), d, generator, device=xs.device, dtype=self.dtype)
            preds[sl] = self.fit_predict(x[bb, : N - 1], y[bb, : N - 1], ii, x[bb, ii], params,
                                         generator=generator)
        out[:, 1:] = preds.reshape(B, N - 1)
        return out.to(ys.dtype)
