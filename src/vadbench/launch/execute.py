"""One run: execute notebooks/train_evaluate.ipynb with papermill into the run's folder; record a failure.

Every launcher (this process, worker processes, submitit jobs, Kaggle kernels) runs a run through
`execute_run`, so records land in the same place with the same content whichever launcher ran them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

from vadbench import records
from vadbench.config import RunSpec
from vadbench.paths import kernel_environ, notebooks_dir

log = logging.getLogger(__name__)
NOTEBOOK = "train_evaluate.ipynb"


#: Per model kind, environment variables the run's kernel must start with. glibc's malloc otherwise
#: keeps PatchCore's coreset-selection temporaries in its heap (grew to an OOM kill at 24 GB on a CPU);
#: it slows EfficientAD by ~25 %, so it is set only where needed.
KERNEL_ENV = {"patchcore": {"MALLOC_MMAP_THRESHOLD_": "1048576"}}


def kernel_env(kind: str) -> contextlib.AbstractContextManager[None]:
    """The run kernel's environment: our working folder as the project root, progress as log lines, KERNEL_ENV."""
    quiet = {"VADBENCH_PROGRESS": "lines", "TQDM_DISABLE": "1"}  # anomalib's bars would flood the executed notebook
    return kernel_environ({**quiet, **KERNEL_ENV.get(kind, {})})


def execute_run(run: RunSpec, params_file: str, output_root: Path, directory: Path) -> bool:
    """Execute the notebook for one run; on failure write a failed record. True when it succeeded."""
    import papermill

    directory.mkdir(parents=True, exist_ok=True)
    started = records.now()
    t0 = time.monotonic()
    try:
        with kernel_env(run.model.kind):
            papermill.execute_notebook(
                str(notebooks_dir() / NOTEBOOK), str(directory / NOTEBOOK),
                parameters={"experiment": str(params_file), "model": run.model.name, "dataset": run.dataset.name,
                            "category": run.category, "seed": run.seed, "output_dir": str(output_root)},
                kernel_name="python3", cwd=os.getcwd(), progress_bar=False, log_output=False,
            )
    except Exception as exc:  # papermill raises its own error for a failing cell; anything else is a failure too
        error = _error_text(exc)
        log.error("%s failed after %.0f s: %s (see %s)", run.label, time.monotonic() - t0, error, directory / NOTEBOOK)
        write_failed_record(run, directory, error, started)
        return False
    if not records.is_finished(directory, run.config_hash):
        write_failed_record(run, directory, "notebook finished without writing an ok record", started)
        return False
    log.info("%s finished in %.0f s", run.label, time.monotonic() - t0)
    return True


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
