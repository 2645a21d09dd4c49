"""File locks, in one place: one run one owner, a host-wide log of runs in progress, and a plain exclusive section.

`RunLock` holds an `flock` on `.<run>.lock` beside the run folder while the run executes; the file
names the owning process and host. A second batch that finds it held skips the run. The kernel
drops an `flock` when its process dies, so a lock file left by a dead process is taken over (with a
warning naming the dead owner).

`ActiveRuns` keeps one small file per run in progress on this host (under $VADBENCH_ACTIVE_DIR, else
~/.cache/vadbench/active-runs), so a finished run can tell whether other runs shared the machine
while it was timed. `exclusive` makes others wait (one VisA conversion at a time, whichever run comes first).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

STALE_ACTIVE_S = 7 * 24 * 3600  # entries of finished runs older than this are pruned


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if needed) for the block; other holders wait their turn."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lock_path(directory: Path) -> Path:
    """The lock file of a run folder: `.<name>.lock` beside it."""
    return directory.parent / f".{directory.name}.lock"


def owner_text(owner: dict) -> str:
    """`pid N on host H (since T)` of a lock file's content."""
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {owner.get('since', '?')})"


class RunLock:
    """An exclusive, non-blocking lock on one run folder; `acquire` says whether this process got it."""

    def __init__(self, directory: Path, label: str) -> None:
        self.path, self.label = lock_path(directory), label
        self._fd: int | None = None
        self.holder: dict = {}  # who holds it, when acquire failed

    def acquire(self) -> bool:
        """Take the lock (taking over one left by a dead process, with a warning); False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.holder = _read_owner(fd)
                os.close(fd)
                return False
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder released and removed it between our open and flock: try the new file
        previous = _read_owner(fd)
        if previous:
            log.warning("%s: taking over the lock %s left by %s, which is gone", self.label, self.path,
                        owner_text(previous))
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        self._fd = fd
        return True

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _read_owner(fd: int) -> dict:
    try:
        owner = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


# ---- runs in progress on this host ---------------------------------------------------------------

def active_dir() -> Path:
    """Where this host's runs in progress are listed ($VADBENCH_ACTIVE_DIR, else ~/.cache/vadbench/active-runs)."""
    env = os.environ.get("VADBENCH_ACTIVE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vadbench" / "active-runs"


@dataclass
class ActiveRuns:
    """This run's entry among the host's runs in progress (`start`), and the others that overlapped it (`finish`)."""

    label: str
    folder: Path = field(default_factory=active_dir)
    started: float = 0.0
    _path: Path | None = None
    _fd: int | None = None

    def start(self) -> None:
        """List this run as in progress (an flocked file, so a crashed run is not taken as running).

        When the folder cannot be written the run goes on, and `finish` says sharing is unknown (None).
        """
        try:
            self._start()
        except OSError as exc:
            log.warning("%s: cannot list the run in %s (%s): whether the machine was shared is not recorded",
                        self.label, self.folder, exc)
            self._fd = None

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._prune()
        self.started = time.time()
        self._path = self.folder / f"{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}.json"
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._write({"label": self.label, "host": socket.gethostname(), "pid": os.getpid(),
                     "start": self.started, "end": None})

    def finish(self) -> list[str] | None:
        """Mark this run finished; the labels of other runs on this host whose time overlapped it (None: unknown)."""
        end = time.time()
        if self._fd is None:
            return None
        self._write({"label": self.label, "host": socket.gethostname(), "pid": os.getpid(),
                     "start": self.started, "end": end})
        os.close(self._fd)
        self._fd = None
        return [entry["label"] for entry in self._others() if _overlaps(entry, self.started, end)]

    def _write(self, entry: dict) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(entry).encode(), 0)

    def _others(self) -> list[dict]:
        host, out = socket.gethostname(), []
        for path in self.folder.glob(f"{host}-*.json"):
            if path == self._path:
                continue
            entry = _read_entry(path)
            if entry is not None:
                out.append(entry)
        return out

    def _prune(self) -> None:
        """Remove entries of runs that ended (or died) more than STALE_ACTIVE_S ago."""
        for path in self.folder.glob("*.json"):
            try:
                if time.time() - path.stat().st_mtime > STALE_ACTIVE_S:
                    path.unlink(missing_ok=True)
            except OSError:
                continue


def _read_entry(path: Path) -> dict | None:
    """An entry with `end` filled in: its end time, now when its run is still in progress, its mtime when it died."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        entry = json.loads(os.pread(fd, 4096, 0) or b"null")
        if not isinstance(entry, dict) or "start" not in entry:
            return None
        if entry.get("end") is None:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                entry["end"] = os.fstat(fd).st_mtime  # its process died without finishing: last sign of life
            except BlockingIOError:
                entry["end"] = time.time()  # still running
        return entry
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


def _overlaps(entry: dict, start: float, end: float) -> bool:
    return float(entry["start"]) < end and float(entry["end"]) > start
