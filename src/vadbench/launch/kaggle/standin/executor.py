"""Kernel sessions on this machine: each pushed version runs in the rehearsal's /kaggle replica, in its own thread.

A session is queued for `queue_s`, then running while papermill executes the notebook (a Python script: `python
-u`) with /kaggle/working as its working directory and output, its valid dataset sources mounted read-only in both
layouts (/kaggle/input/<slug> and /kaggle/input/datasets/<owner>/<slug>), nothing downloadable (the replica's
`pip --no-index`). The notebook runs as pushed, except for the replica's own parameter values, set the papermill way
for the names its parameters cell declares: per-kernel project, scratch and site folders (a kernel's /tmp is its
own), `pip_options: ["--no-index"]`, and `require_gpu: False` for a GPU session on a machine whose torch sees no
GPU (it runs on this machine's CPU). It ends complete (exit 0) or error; past its session timeout it is killed and
errors. Its log is the service's list of {stream_name, time, data}; its outputs are /kaggle/working's files.
"""
from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

from vadbench.errors import ConfigError
from vadbench.launch import parameters
from vadbench.launch.kaggle import rehearse
from vadbench.launch.kaggle.standin.world import Kernel, Session, World

log = logging.getLogger(__name__)


@functools.cache
def cuda_here() -> bool:
    """Whether torch sees a GPU on this machine (asked once)."""
    import torch

    return bool(torch.cuda.is_available())


class Executor:
    """Runs sessions in threads; `stop` cancels the ones still queued or running."""

    def __init__(self, world: World, queue_s: float = 1.0) -> None:
        self.world, self.queue_s = world, queue_s
        self.threads: list[threading.Thread] = []
        self.namespace = rehearse.can_namespace()

    def submit(self, kernel: Kernel, session: Session) -> None:
        thread = threading.Thread(target=self._session, args=(kernel, session), daemon=True,
                                  name=f"kernel {kernel.ref} v{session.number}")
        self.threads.append(thread)
        thread.start()

    def stop(self, wait_s: float = 30.0) -> None:
        with self.world.lock:
            for kernel in self.world.kernels.values():
                for session in kernel.versions:
                    session.cancel.set()
        for thread in self.threads:
            thread.join(timeout=wait_s)

    def _session(self, kernel: Kernel, session: Session) -> None:
        world = self.world
        if session.cancel.wait(self.queue_s):
            self._end(kernel, session, KernelWorkerStatus.CANCEL_ACKNOWLEDGED, "cancelled before it started")
            return
        with world.lock:
            session.status, session.started = KernelWorkerStatus.RUNNING, time.time()
            world.event("started", kernel=kernel.ref, version=session.number, gpu=session.gpu,
                        gpu_sessions_running=self._gpu_running())
        try:
            status, failure = self._execute(kernel, session)
        except Exception as exc:  # noqa: BLE001 - a stand-in fault is the session's error, said in its failure
            log.exception("session %s v%d", kernel.ref, session.number)
            status, failure = KernelWorkerStatus.ERROR, f"{type(exc).__name__}: {exc}"
        self._end(kernel, session, status, failure)

    def _gpu_running(self) -> int:
        return sum(1 for k in self.world.kernels.values() for s in k.versions
                   if s.gpu and s.status == KernelWorkerStatus.RUNNING)

    def _end(self, kernel: Kernel, session: Session, status: KernelWorkerStatus, failure: str) -> None:
        with self.world.lock:
            session.status, session.failure, session.finished = status, failure, time.time()
            self.world.event("finished", kernel=kernel.ref, version=session.number, gpu=session.gpu,
                             status=status.name.lower(), failure=failure, outputs=len(session.outputs()),
                             seconds=round(session.finished - (session.started or session.finished), 1),
                             gpu_sessions_running=self._gpu_running())

    def _execute(self, kernel: Kernel, session: Session) -> tuple[KernelWorkerStatus, str]:
        """Run the session in the replica; its end state and failure message."""
        if session.language != "python":
            return KernelWorkerStatus.ERROR, f"the stand-in runs Python kernels only, not {session.language}"
        base, working = session.folder / "replica", session.working
        working.mkdir(parents=True, exist_ok=True)
        base.mkdir(parents=True, exist_ok=True)
        binds = self._binds(kernel, session)

        def on_output(stream: str, line: str) -> None:
            session.log.append({"stream_name": stream, "time": round(time.time() - (session.started or 0), 3),
                                "data": line})

        if session.kernel_type == "script":
            script = session.folder / f"{kernel.slug}.py"
            script.write_text(session.text, encoding="utf-8")
            run = rehearse.execute_in_replica(script, script, binds, working, base, self.namespace,
                                              command=[sys.executable, "-u", str(script.resolve())],
                                              on_output=on_output, timeout_s=session.timeout_s, cancel=session.cancel)
        else:
            notebook = self._notebook(kernel, session, base, binds)
            run = rehearse.execute_in_replica(notebook, session.folder / "executed.ipynb", binds, working, base,
                                              self.namespace, on_output=on_output, timeout_s=session.timeout_s,
                                              cancel=session.cancel)
        if run.stopped == "cancelled":
            return KernelWorkerStatus.CANCEL_ACKNOWLEDGED, "cancelled"
        if run.stopped == "timeout":
            return KernelWorkerStatus.ERROR, f"the session ran past its {session.timeout_s} s limit and was stopped"
        if run.returncode != 0:
            lines = [line.strip() for line in (run.stderr or run.stdout).splitlines() if line.strip()]
            return KernelWorkerStatus.ERROR, lines[-1] if lines else f"exit status {run.returncode}"
        return KernelWorkerStatus.COMPLETE, ""

    def _binds(self, kernel: Kernel, session: Session) -> list[tuple[Path, str]]:
        """Each valid source's version folder, mounted as owner/slug."""
        binds = []
        with self.world.lock:
            for ref in session.sources:
                owner, slug, *pin = ref.split("/")
                version = self.world.datasets[(owner, slug)].version(int(pin[0]) if pin else None)
                binds.append((version.folder, f"{owner}/{slug}"))
        return binds

    def _notebook(self, kernel: Kernel, session: Session, base: Path, binds: list[tuple[Path, str]]) -> Path:
        """The pushed notebook with the replica's parameter values (when it declares them), written for papermill."""
        nb = nbformat.reads(session.text, as_version=4)
        try:
            declared = parameters.declared(nb)
        except ConfigError:
            declared = {}  # no parameters cell: it runs exactly as pushed
        if declared:
            values: dict[str, Any] = rehearse.replica_overrides(nb, base, session.working, binds, self.namespace)
            values["pip_options"] = ["--no-index"]
            if session.gpu and not cuda_here():
                values["require_gpu"] = False
            nb = parameters.parameterize(nb, {k: v for k, v in values.items() if k in declared})
        path = session.folder / f"{kernel.slug}.ipynb"
        nbformat.write(nb, path)
        return path
