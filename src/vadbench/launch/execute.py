"""One run: execute notebooks/train_evaluate.ipynb with papermill; record a failure.

Every launcher (this process, worker processes, submitit jobs, Kaggle kernels) runs a run through
`execute_run`, so records land in the same place with the same content whichever launcher ran them.
A run is locked (`vadbench.locks`) and executes into a staging folder beside its final place,
swapped in only when complete (`vadbench.launch.staging`): a run folder is complete or absent.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Literal

from vadbench import locks, quiet, records
from vadbench.config import RunSpec
from vadbench.errors import OutputError
from vadbench.launch import staging
from vadbench.paths import kernel_environ, notebooks_dir

log = logging.getLogger(__name__)
NOTEBOOK = "train_evaluate.ipynb"
ENGINE_ENV = "VADBENCH_NOTEBOOK_ENGINE"  # a registered papermill engine to run notebooks with (default: a kernel)


#: Per model kind, environment variables the run's kernel must start with. glibc's malloc otherwise
#: keeps PatchCore's coreset-selection temporaries in its heap (grew to an OOM kill at 24 GB on a CPU);
#: it slows EfficientAD by ~25 %, so it is set only where needed.
KERNEL_ENV = {"patchcore": {"MALLOC_MMAP_THRESHOLD_": "1048576"}}


def kernel_env(kind: str) -> contextlib.AbstractContextManager[None]:
    """The run kernel's environment: our working folder as the project root, progress as log lines, KERNEL_ENV."""
    lines = {"VADBENCH_PROGRESS": "lines", "TQDM_DISABLE": "1"}  # anomalib's bars would flood the executed notebook
    return kernel_environ({**lines, **KERNEL_ENV.get(kind, {})})


Outcome = Literal["ok", "failed", "locked", "finished"]  # finished: another batch finished it meanwhile


def execute_run(run: RunSpec, params_file: str, output_root: Path, directory: Path, force: bool = False) -> Outcome:
    """Run one run as the only owner of its folder, into a staging folder swapped in only when complete.

    Returns `locked` (another process holds the run; nothing done), `finished` (found finished once locked,
    unless force), `ok`, or `failed` (a failed record is written, or logged when the folder cannot be written).
    """
    lock = locks.RunLock(directory, run.label)
    try:
        if not lock.acquire():
            log.warning("%s: skipped, another batch is running it (%s; lock %s)", run.label,
                        locks.owner_text(lock.holder), lock.path)
            return "locked"
    except OSError as exc:
        return _unwritable(run, directory, exc)
    try:
        staging.recover(directory)
        if not force and records.is_finished(directory, run.config_hash):
            log.info("%s: finished by another batch meanwhile, skipped", run.label)
            return "finished"
        return _execute_owned(run, params_file, directory)
    except OSError as exc:
        return _unwritable(run, directory, exc)
    finally:
        lock.release()


def _execute_owned(run: RunSpec, params_file: str, directory: Path) -> Outcome:
    """Execute the notebook into a staging folder, record a failure there, and swap the folder in."""
    import papermill

    stage = staging.Staging(directory, run)
    started, t0 = records.now(), time.monotonic()
    active = locks.ActiveRuns(run.label)
    active.start()
    try:
        with kernel_env(run.model.kind):
            notebook_t0 = time.monotonic()
            papermill.execute_notebook(
                str(notebooks_dir() / NOTEBOOK), str(stage.run_dir / NOTEBOOK),
                parameters={"experiment": str(params_file), "model": run.model.name, "dataset": run.dataset.name,
                            "category": run.category, "seed": run.seed, "output_dir": str(stage.root)},
                kernel_name="python3", cwd=os.getcwd(), progress_bar=False, log_output=False,
                kernel_manager_class=stage.kernel_manager_class(), extra_arguments=quiet.kernel_arguments(),
                engine_name=os.environ.get(ENGINE_ENV) or None,
            )
            notebook_s = time.monotonic() - notebook_t0
        error = None
    except Exception as exc:  # papermill raises its own error for a failing cell; anything else is a failure too
        if getattr(exc, "ename", None) == "KeyboardInterrupt":  # Ctrl-C reached the kernel first
            stage.discard()
            raise KeyboardInterrupt from exc
        error = _error_text(exc)
    except BaseException:  # an interrupt: nothing of this attempt is kept, the old run folder stays as it was
        stage.discard()
        raise
    finally:
        shared = active.finish()
    if error is None and not records.is_finished(stage.run_dir, run.config_hash):
        error = "notebook finished without writing an ok record"
    if error is not None:
        log.error("%s failed after %.0f s: %s (see %s)", run.label, time.monotonic() - t0, error, directory / NOTEBOOK)
        write_failed_record(run, stage.run_dir, error, started)
        stage.commit_failed(run.config_hash)
        return "failed"
    mark_sharing(stage.run_dir, shared, notebook_s)
    stage.commit()
    log.info("%s finished in %.0f s", run.label, time.monotonic() - t0)
    return "ok"


def mark_sharing(directory: Path, shared: list[str] | None, notebook_s: float | None = None) -> None:
    """Add to the record whether other runs used this machine while it ran (and so while it was timed; None: unknown),
    and the notebook kernel's start and imports (`timing.phases.kernel`: its wall time less the run's own phases)."""
    record = records.read_record(directory)
    record.pop("_path", None)
    phases = (record.get("timing") or {}).get("phases")
    if notebook_s is not None and isinstance(phases, dict):
        phases["kernel"] = round(max(0.0, notebook_s - sum(v for v in phases.values() if isinstance(v, int | float))), 3)
    environment = dict(record.get("environment") or {})
    environment["machine_shared"] = None if shared is None else bool(shared)
    environment["concurrent_runs"] = None if shared is None else len(shared)
    record["environment"] = environment
    if shared:
        log.warning("%s: %d other run(s) used this machine while it was timed (%s); its timings say so "
                    "(environment.machine_shared)", record.get("model"), len(shared), ", ".join(sorted(set(shared))[:3]))
    records.write_record(directory, record)


def _unwritable(run: RunSpec, directory: Path, exc: OSError) -> Outcome:
    """A run whose folder cannot be written: logged as failed (and recorded if the folder takes a record)."""
    log.error("%s failed: its run folder %s cannot be written: %s", run.label, directory, exc)
    try:
        write_failed_record(run, directory, f"{type(exc).__name__}: {exc}", records.now())
    except OSError as again:
        log.error("%s: no failed record written either: %s", run.label, again)
    return "failed"


def probe_output(root: Path) -> None:
    """Create the runs root and write (then remove) a file in it; OutputError naming the path and the fix otherwise."""
    probe = Path(root) / f".write-probe-{os.getpid()}"
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"--output {root} cannot be written ({reason}): choose a writable folder "
                          "or fix its permissions") from None


def _error_text(exc: Exception) -> str:
    """`Type: message` of the notebook's exception (papermill keeps ename/evalue)."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    if ename:
        return f"{ename}: {evalue}"
    return f"{type(exc).__name__}: {exc}"


def write_failed_record(run: RunSpec, directory: Path, error: str, started: str) -> None:
    """Record a failed run with its error and config.

    Never overwrites an ok record of this config, nor the failed record the run itself wrote during this
    attempt (it carries the stage it failed in).
    """
    existing = record_of(directory, run.config_hash)
    if existing.get("status") == "ok":
        log.warning("%s raised after writing its ok record; keeping the record: %s", run.label, error)
        return
    if existing.get("status") == "failed" and str(existing.get("started_at", "")) >= started:
        return
    records.write_record(directory, records.failed_record(run, error, started))


def record_of(directory: Path, config_hash: str) -> dict:
    """The directory's record when it is of this config, else {}."""
    try:
        record = records.read_record(directory)
    except (OSError, ValueError):
        return {}
    return record if record.get("config_hash") == config_hash else {}
