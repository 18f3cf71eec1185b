"""One process per state: a second edge agent (or hub) on the same files refuses to start.

Two agents on one outbox would each number records from their own memory, and take turns on
one MQTT identity (the broker drops the older connection at every connect): records reused,
lost and committed twice. A technician starting ``jikimi edge run`` by hand while the service
runs does exactly that. So each process holds an exclusive ``flock`` on a lock file beside its
state for its whole life.

- The kernel releases the lock however the process ends (SIGKILL, the OOM killer, a power
  cut), so a stale lock never needs clearing by hand and a restart never waits for one.
- The file holds the holder's PID, for the refusal's message only; the lock is the ``flock``.
- A refusal is an :class:`AlreadyRunning` naming the lock file and the holder, before anything
  is opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from shared.errors import JikimiError


class InstanceError(JikimiError):
    """This process cannot hold its state for itself."""


class AlreadyRunning(InstanceError):
    """Another process holds the state this one would use."""


@contextlib.contextmanager
def hold(lock_file: Path, what: str) -> Iterator[None]:
    """Hold ``lock_file`` exclusively while the block runs, or raise :class:`AlreadyRunning`
    (:class:`InstanceError` if the file cannot be opened at all)."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InstanceError(f"{lock_file}: cannot open the {what}'s lock file: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise AlreadyRunning(f"{lock_file}: another {what} is running on this state (pid {holder}); "
                                 f"stop it first (systemctl stop, or end that process)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def beside(db: Path) -> Path:
    """The lock file of a process whose state is the database ``db``: ``DB.lock``."""
    return Path(f"{db}.lock")
