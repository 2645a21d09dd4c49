"""A batch: expand an experiment into runs, check and prepare inputs, skip finished runs, launch the rest.

Each run is one papermill execution of notebooks/train_evaluate.ipynb (`vadbench.launch.execute`), in
this process or on workers (`vadbench.launch.workers`). A run that already finished with the same config
is skipped (unless forced). A failed run gets a `failed` record and the batch goes on.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from vadbench import records
from vadbench.config import Experiment, RunSpec, expand_runs, load_experiment
from vadbench.errors import ConfigError
from vadbench.launch.execute import Outcome, execute_run, probe_output, record_of, write_failed_record
from vadbench.launch.workers import (
    LAUNCHERS,
    RunGate,
    launch_submitit,
    launch_workers,
    load_slurm_spec,
    visible_gpus,
    worker_envs,
)

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What a batch did: counts by outcome, the failed runs' labels and those another batch held (locked)."""

    total: int
    done: int = 0
    skipped: int = 0
    failed: list[str] | None = None
    locked: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # not started: the gate (a Kaggle shard's deadline) said no

    def tally(self, label: str, outcome: Outcome) -> None:
        """Count one run's outcome."""
        if outcome == "ok":
            self.done += 1
        elif outcome == "finished":
            self.skipped += 1
        elif outcome == "locked":
            self.locked.append(label)
        elif outcome == "deferred":
            self.deferred.append(label)
        else:
            self.failed.append(label)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise."""
        return 1 if self.failed else 0


def preflight(exp: Experiment, runs: list[RunSpec] | None = None) -> None:
    """Check dataset roots/categories, split sizes and model inputs before any run starts (raises on the first problem).

    runs: check only what these runs use (a Kaggle shard); None = the whole grid.
    """
    from vadbench.models.preflight import check_inputs

    check_datasets(exp, runs)
    for model in _models_of(exp, runs):
        check_inputs(model)


def _models_of(exp: Experiment, runs: list[RunSpec] | None) -> list:
    """The experiment's models that these runs use (all of them for None)."""
    used = None if runs is None else {r.model.name for r in runs}
    return [m for m in exp.models if used is None or m.name in used]


def check_datasets(exp: Experiment, runs: list[RunSpec] | None = None) -> dict[tuple[str, str], object]:
    """Validate each dataset category (of these runs, else all) and plan its split; the plans by (dataset, category)."""
    from vadbench.data.checks import require_category
    from vadbench.data.splits import check_minimums, plan_split

    used = None if runs is None else {(r.dataset.name, r.category) for r in runs}
    plans = {}
    for ds in exp.datasets:
        for category in ds.categories:
            if used is not None and (ds.name, category) not in used:
                continue
            check = require_category(ds, category)
            val_source = ds.val_source or exp.evaluation.val_source
            plans[ds.name, category] = plan_split(ds, category, exp.evaluation.val_ratio, val_source, check)
            check_minimums(ds, category, plans[ds.name, category], exp.models, val_source)
    return plans


def dry_run_check(exp: Experiment) -> tuple[dict, list[str]]:
    """For --dry-run: dataset plans (raising on a dataset problem) and the model-input problems, listed not raised."""
    from vadbench.errors import InputMissingError
    from vadbench.models.preflight import check_inputs

    plans = check_datasets(exp)
    missing = []
    for model in exp.models:
        try:
            check_inputs(model)
        except InputMissingError as exc:
            missing.append(f"{model.name}: {exc}")
    return plans, missing


def build_inputs(exp: Experiment, runs: list[RunSpec] | None = None) -> None:
    """Build the inputs the params say to build (a distilled EfficientAD teacher) for these runs' models, cached."""
    from vadbench.models.preflight import prepare_inputs

    for model in _models_of(exp, runs):
        prepare_inputs(model)


def run_dir_of(run: RunSpec, output_root: Path) -> Path:
    """Where a run writes."""
    return records.run_dir(output_root, run.experiment, run.model.name, run.dataset.name, run.category, run.seed)


def run_experiment(params_file: Path | str, output_root: Path | str = "outputs/runs", force: bool = False,
                   dry_run: bool = False, workers: int | None = 1, launcher: str = "local",
                   slurm_params: Path | str | None = None, select: set[tuple[str, str, str, int]] | None = None,
                   gate: RunGate | None = None) -> BatchResult:
    """Run every cell of an experiment's grid that has not finished yet.

    workers/launcher: see vadbench.launch.workers (workers None = one per visible GPU); select keeps only
    the runs whose (model, dataset, category, seed) it lists (a Kaggle shard), and only those are
    checked and prepared; gate(run, index, total), asked before each run starts (here or on a local
    worker), defers the run when it returns False, and gate.done(run) is told when it ends (a Kaggle
    shard's deadline).
    """
    exp = load_experiment(params_file)
    runs = expand_runs(exp)
    if select is not None:
        runs = [r for r in runs if (r.model.name, r.dataset.name, r.category, r.seed) in select]
    if workers is None and launcher == "local":
        workers = max(1, len(visible_gpus())) if exp.device != "cpu" else 1
    sequential = launcher == "local" and workers == 1
    pending: list[tuple[RunSpec, Path]] = []
    output_root = Path(output_root)
    if dry_run:
        return _dry_run(exp, runs, output_root)
    preflight(exp, runs if select is not None else None)
    probe_output(output_root)
    build_inputs(exp, runs if select is not None else None)
    result = BatchResult(total=len(runs), failed=[])
    started = time.monotonic()
    for index, run in enumerate(runs, start=1):
        directory = run_dir_of(run, output_root)
        finished = records.is_finished(directory, run.config_hash)
        if finished and not force:
            log.info("[%d/%d] %s: finished with the same config, skipped (--force reruns)", index, len(runs), run.label)
            result.skipped += 1
            continue
        if not sequential:
            pending.append((run, directory))
            continue
        if gate is not None and not gate(run, index, len(runs)):
            result.deferred.append(run.label)
            continue
        log.info("[%d/%d] %s: running into %s (elapsed %s, %d left after this)", index, len(runs), run.label,
                 directory, _clock(time.monotonic() - started), len(runs) - index)
        result.tally(run.label, execute_run(run, exp.source, output_root, directory, force=force))
        if gate is not None:
            gate.done(run)
    if pending:
        _launch(pending, exp, output_root, workers, launcher, slurm_params, result, force, gate)
    log.info("batch %s: %d run, %d skipped, %d failed, %d left to another batch (locked), %d deferred in %s",
             exp.name, result.done, result.skipped, len(result.failed), len(result.locked), len(result.deferred),
             _clock(time.monotonic() - started))
    for label in result.failed:
        log.error("failed: %s", label)
    for label in result.locked:
        log.warning("not run here, another batch holds it: %s", label)
    if len(runs) > 0:
        log.info("runs of %s:\n%s", exp.name, outcome_table(runs, output_root, result))
    return result


def outcome_table(runs: list[RunSpec], output_root: Path, result: BatchResult) -> str:
    """One line per run: its label, status, minutes (from its record) and image AUROC."""
    lines = [f"  {'run':<44} {'status':<9} {'minutes':>7} {'image AUROC':>11}"]
    for run in runs:
        record = record_of(run_dir_of(run, output_root), run.config_hash)
        status = "deferred" if run.label in result.deferred else "locked" if run.label in result.locked \
            else record.get("status", "-")
        minutes = records.minutes_between(record.get("started_at"), record.get("finished_at"))
        auroc = (record.get("metrics") or {}).get("image_auroc")
        lines.append(f"  {run.label:<44} {status:<9} {'-' if minutes is None else f'{minutes:.1f}':>7} "
                     f"{'-' if auroc is None else f'{auroc:.3f}':>11}")
    return "\n".join(lines)


def _launch(pending: list[tuple[RunSpec, Path]], exp: Experiment, output_root: Path, workers: int | None,
            launcher: str, slurm_params: Path | str | None, result: BatchResult, force: bool = False,
            gate: RunGate | None = None) -> None:
    """Hand pending runs to a launcher (vadbench.launch.workers) and tally what comes back."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {launcher!r}; choose one of {list(LAUNCHERS)}")
    if gate is not None and launcher != "local":
        raise ConfigError(f"a deadline gate needs the local launcher, not {launcher!r}")
    if launcher == "local":
        outcomes = launch_workers(pending, exp.source, output_root, worker_envs(workers, exp.device), force, gate)
    else:
        envs = worker_envs(workers or len(pending), exp.device) if launcher == "submitit-local" else None
        outcomes = launch_submitit(pending, exp.source, output_root, launcher,
                                             load_slurm_spec(slurm_params),
                                             Path("outputs/launcher") / launcher / exp.name, envs, force)
    directories = {run.label: directory for run, directory in pending}
    for run, outcome in outcomes:
        result.tally(run.label, outcome)
        if outcome != "failed":
            continue
        if not record_of(directories[run.label], run.config_hash):  # the worker or job died before recording
            write_failed_record(run, directories[run.label], "launcher: the worker or job died (see its log)", records.now())


def _dry_run(exp: Experiment, runs: list[RunSpec], output_root: Path) -> BatchResult:
    """List every run with its dataset root (checked) and split sizes; name missing model inputs. Trains nothing."""
    plans, missing = dry_run_check(exp)
    for index, run in enumerate(runs, start=1):
        plan = plans[run.dataset.name, run.category]
        state = "done" if records.is_finished(run_dir_of(run, output_root), run.config_hash) else "to run"
        tested = "?" if plan.test_images is None else plan.test_images
        log.info("[%d/%d] %s  root=%s  train=%d val=%d test=%s (%s)", index, len(runs), run.label, run.dataset.root,
                 plan.train_images, plan.val_images, tested, state)
    for problem in missing:
        log.error("model input missing (runs would fail before training): %s", problem)
    log.info("dry run of %s: %d runs; dataset roots checked: %s; model inputs %s", exp.name, len(runs),
             ", ".join(sorted({f"{d.name}={d.root}" for d in exp.datasets})),
             "missing for " + ", ".join(p.split(":")[0] for p in missing) if missing else "present")
    return BatchResult(total=len(runs), failed=[p.split(":")[0] for p in missing])


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
