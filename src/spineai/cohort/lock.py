"""One run at a time per output: ``<out>.lock``, released by the operating system when the process
dies, even by kill -9."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from spineai.errors import SpineAIError

# Descriptors of the locks this process holds: a forked worker closes its copies at once, or it
# would keep the lock after the run that made it was killed.
_held: set = set()


def close_inherited() -> None:
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


@contextlib.contextmanager
def output_lock(out: str | os.PathLike):
    """Hold ``<out>.lock`` for the run: a second run on the same output is refused, not interleaved.
    The operating system releases the lock when a process dies, even by kill -9."""
    lock = Path(out).with_name(Path(out).name + ".lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock_fd(fd)
        except OSError:
            os.close(fd)
            raise SpineAIError(f"another spineai run is writing {out} (it holds {lock}); wait for it to finish, "
                               f"or choose another --out") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            _held.add(fd)
            break
        os.close(fd)  # the file was removed by the run that just finished: lock the new one
    try:
        yield lock
    finally:
        try:
            lock.unlink()
        except OSError:
            pass
        _held.discard(fd)
        os.close(fd)


def _lock_fd(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
