"""One process at a time in a run folder.

Two processes training into one folder would interleave their log rows, backups
and checkpoints. :func:`holding` takes an advisory lock on ``run_dir/.lock``
(``fcntl.flock``) for as long as a run writes the folder: a second process that
asks for it is refused at once with a :class:`FolderInUseError` naming the
process that holds it. The operating system releases the lock when its process
ends, however it ends (an exception, Ctrl-C, SIGKILL), so a lock left by a dead
process never blocks a new run. Where the file system cannot lock (some network
and FUSE mounts), the process id written into the lock file is checked instead.
Within one process the lock is re-entrant: ``runs.train`` holds it around
:func:`cifar_helpers.training.fit`, which takes it too.
"""

import contextlib
import os
from pathlib import Path

LOCK_FILE = ".lock"

_held: dict[Path, int] = {}  # folders this process holds, and how many times


class FolderInUseError(RuntimeError):
    """Another process is writing the run folder; the message names it."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _refuse(run_dir: Path, pid: int | None):
    who = f"process {pid}" if pid else "another process"
    raise FolderInUseError(
        f"{run_dir} is in use: {who} is training into it. Wait for it to end (or "
        "stop it: the same command then resumes its run), or train into another "
        "--out folder."
    )


@contextlib.contextmanager
def holding(run_dir):
    """Hold the lock of ``run_dir`` (created if needed) for the ``with`` block."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = run_dir / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115  held open for the whole block
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _refuse(run_dir, _holder(path))
        except (ImportError, OSError):  # no flock here: trust a live process id
            pid = _holder(path)
            if pid and pid != os.getpid() and _alive(pid):
                _refuse(run_dir, pid)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held[key] = 1
        try:
            yield
        finally:
            del _held[key]
            handle.seek(0)
            handle.truncate()  # no process id left to mislead the fallback check
    finally:
        handle.close()
