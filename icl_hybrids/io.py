"""Small I/O helpers: atomic writes (results and configs are never half-written), strict JSON, run locks.

* Temporary files are unique per writer (``mkstemp``: pid/random suffix) and removed when a write fails
  (full disk, kill): a failed write leaves the old file and no ``.tmp`` behind.
* Written files get the user's umask (``mkstemp`` alone would make them 0600).
* JSON is strict: non-finite floats (NaN, inf) are written as ``null``, never as bare ``NaN`` tokens.
"""
from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide and racy)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file."""
    return 0o666 & ~_umask()


def _tempfile(path: Path) -> tuple[int, str]:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
    except OSError:
        pass
    return fd, tmp


def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _tempfile(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def finite_json(obj):
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, tensors/numpy values as Python."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return finite_json(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    try:
        return finite_json(float(obj))
    except (TypeError, ValueError):
        return str(obj)


def dumps_json(obj) -> str:
    return json.dumps(finite_json(obj), indent=2, allow_nan=False) + "\n"


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, dumps_json(obj))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def atomic_save_torch(obj, path) -> None:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _tempfile(path)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunLock:
    """An exclusive lock on a run directory (``<run_dir>/.lock``, ``fcntl.flock``): a second live run in
    the same directory is refused; the kernel drops the lock when its holder dies, so the lock of a killed
    process is simply taken over. The file records pid, host and start time for the error message."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / ".lock"
        self._f = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown process"
        except OSError:
            return "unknown process"

    def acquire(self) -> bool:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        self._f = f
        return True

    def release(self) -> None:
        if self._f is not None:
            import fcntl

            try:
                fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            finally:
                self._f.close()
                self._f = None
