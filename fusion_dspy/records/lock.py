"""One run per output folder: an exclusive lock, taken before anything in the folder is read or written.

Two runs appending to the same records would write the same ids twice (each skips only what it
read at its start) and could cut each other's half-written last line. :func:`lock_folder` takes an
exclusive ``flock`` on ``FOLDER/.fusion-dspy.lock``; a second run fails at once, naming the process
that holds it. The kernel releases the lock when its process ends, however it ends (even SIGKILL),
so a crashed run never leaves the folder locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from fusion_dspy.errors import ConfigurationError

LOCK_NAME = ".fusion-dspy.lock"


@contextlib.contextmanager
def lock_folder(folder: str | os.PathLike[str], *, what: str = "--out") -> Iterator[Path]:
    """Hold the folder's exclusive lock (creating the folder) for the ``with`` block.

    Raises:
        ConfigurationError: another process holds it (its pid, host, command and start time are named).
    """
    import fcntl

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise ConfigurationError(
                f"{what} {out} is in use by another run ({holder}); wait for it to finish, or give another {what}"
            ) from None
        try:  # the file we locked must still be the one at the path (a finishing run removes it)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:300], "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still locked: a run that opens it now retries on the new file
        os.close(fd)


def _read(fd: int) -> str:
    """The holder as a phrase for the error message."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info.get("pid"):
        return "a process that is starting"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started") or 0))
    return f"pid {info['pid']} on {info.get('host', '?')}, started {started}: {info.get('command', '?')}"
