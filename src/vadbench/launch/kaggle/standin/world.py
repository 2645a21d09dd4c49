"""The stand-in's state: datasets and kernels per account, their versions and sessions, quota, and the event log.

Everything lives in memory (files on disk under the state folder); a restarted stand-in starts empty. All access
goes through `World.lock`. Unknown names and other accounts' private ones are answered alike, with 403 and
"Permission '<what>' was denied" (the service's words as the client quotes them: kaggle_api_extended's
kernels_status/kernels_output messages and kaggle-cli issue #642), so a wrong slug never tells whether a private
one exists.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

log = logging.getLogger(__name__)
#: Session states that hold one of the account's batch sessions (a cancel is counted until it is acknowledged).
ACTIVE = (KernelWorkerStatus.QUEUED, KernelWorkerStatus.RUNNING, KernelWorkerStatus.CANCEL_REQUESTED)


class ServiceError(Exception):
    """An HTTP error answer: status code and the service's message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def denied(permission: str) -> ServiceError:
    return ServiceError(403, f"Permission '{permission}' was denied")


@dataclass
class DatasetVersion:
    """One version of a dataset: its files (after processing) and its processing state."""

    number: int
    folder: Path
    notes: str = ""
    status: DatabundleVersionStatus = DatabundleVersionStatus.BLOBS_RECEIVED
    error: str = ""
    created: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))


@dataclass
class Dataset:
    """A dataset of an account; `--dataset` ones are public and ready as given."""

    id: int
    owner: str
    slug: str
    title: str
    licence: str
    private: bool
    subtitle: str = ""
    description: str = ""
    keywords: list[str] = field(default_factory=list)
    versions: list[DatasetVersion] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    def current(self) -> DatasetVersion | None:
        """The newest ready version (the one a kernel attaching `owner/slug` gets)."""
        ready = [v for v in self.versions if v.status == DatabundleVersionStatus.READY]
        return ready[-1] if ready else None

    def version(self, number: int | None) -> DatasetVersion | None:
        """A version by number; the current one for None or 0 (kagglesdk reads an absent number as 0)."""
        if not number:
            return self.current()
        return next((v for v in self.versions if v.number == number), None)


@dataclass
class Session:
    """One pushed version of a kernel and its run."""

    number: int
    text: str
    language: str
    kernel_type: str
    gpu: bool
    machine_shape: str
    internet: bool
    timeout_s: int
    sources: list[str]
    folder: Path
    pinning: str = ""
    docker_image: str = ""
    status: KernelWorkerStatus = KernelWorkerStatus.QUEUED
    failure: str = ""
    pushed: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    log: list[dict[str, Any]] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def working(self) -> Path:
        return self.folder / "working"

    def outputs(self) -> list[Path]:
        """The files the kernel left in /kaggle/working, once it has ended (sorted, relative)."""
        if self.status not in (KernelWorkerStatus.COMPLETE, KernelWorkerStatus.ERROR) or not self.working.is_dir():
            return []
        return sorted(p.relative_to(self.working) for p in self.working.rglob("*") if p.is_file())

    def gpu_seconds(self, now: float) -> float:
        if not self.gpu or self.started is None:
            return 0.0
        return (self.finished or now) - self.started


@dataclass
class Kernel:
    """A kernel of an account: its versions in push order."""

    id: int
    owner: str
    slug: str
    title: str
    private: bool
    versions: list[Session] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.owner}/{self.slug}"

    def version(self, label: str | None) -> Session:
        """The latest version, or the one of a `v<N>` label (404 otherwise, as the service answers)."""
        if not label:
            return self.versions[-1]
        found = next((s for s in self.versions if f"v{s.number}" == label), None)
        if found is None:
            raise ServiceError(404, f"Version {label} of kernel {self.ref} not found")
        return found


class World:
    """Accounts' datasets and kernels, the account limits, and the JSON-lines event log."""

    def __init__(self, root: Path, gpu_sessions: int = 2, quota_hours: float = 30.0, log_path: Path | None = None,
                 base_url: str = "") -> None:
        self.root, self.gpu_sessions, self.quota_hours = root, gpu_sessions, quota_hours
        self.log_path, self.base_url = log_path, base_url
        self.lock = threading.RLock()
        self.datasets: dict[tuple[str, str], Dataset] = {}
        self.kernels: dict[tuple[str, str], Kernel] = {}
        self.started = datetime.now(UTC).replace(tzinfo=None)
        self._ids = 1000

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def event(self, name: str, **fields: Any) -> None:
        """One JSON line in the log (and a log message): time, event, its fields."""
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": name, **fields}
        log.info("%s %s", name, " ".join(f"{k}={v}" for k, v in fields.items()))
        if self.log_path is not None:
            with self.lock, self.log_path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")

    def dataset(self, user: str, owner: str, slug: str, permission: str = "datasets.get") -> Dataset:
        """A dataset the user may see (own, or public); 403 otherwise."""
        found = self.datasets.get((owner, slug))
        if found is None or (found.private and found.owner != user):
            raise denied(permission)
        return found

    def own_dataset(self, user: str, owner: str, slug: str) -> Dataset:
        """A dataset the user may version (own); 403 otherwise (kaggle-cli #642: 'datasets.update' was denied)."""
        found = self.datasets.get((owner, slug))
        if found is None or found.owner != user:
            raise denied("datasets.update")
        return found

    def kernel(self, user: str, owner: str, slug: str) -> Kernel:
        """A kernel the user may see (own, or public); 403 otherwise."""
        found = self.kernels.get((owner, slug))
        if found is None or (found.private and found.owner != user):
            raise denied("kernels.get")
        return found

    def sessions(self, user: str) -> list[Session]:
        return [s for k in self.kernels.values() if k.owner == user for s in k.versions]

    def gpu_active(self, user: str | None = None) -> int:
        """GPU sessions queued or running (of one account, or of all)."""
        return sum(1 for k in self.kernels.values() if user in (None, k.owner) for s in k.versions
                   if s.gpu and s.status in ACTIVE)

    def gpu_hours_used(self, user: str) -> float:
        now = time.time()
        return sum(s.gpu_seconds(now) for s in self.sessions(user)) / 3600

    def url(self, *parts: str) -> str:
        return "/".join([self.base_url, *parts])


@dataclass
class Redirect:
    """An answer that sends the client elsewhere (302), as the service's download calls do."""

    url: str


def one_page(items: list[Any], page_size: int, token: str = "", page: int = 0, cap: int = 20) -> tuple[list[Any], str]:
    """A page of items (at most `cap`), from a token (the next offset) or a 1-based page; and the next token."""
    size = min(page_size or cap, cap)
    if token:
        if not token.isdigit():
            raise ServiceError(400, f"Invalid page token {token!r}")
        start = int(token)
    else:
        start = (max(page, 1) - 1) * size
    chunk = items[start:start + size]
    return chunk, str(start + size) if start + size < len(items) else ""


class Service(Protocol):
    """What a request handler reaches: the state, the uploads, the kernels' executor, the stand-in's settings."""

    world: World
    blobs: Any
    executor: Any
    processing_s: float
