"""Hours on Kaggle: a shard's estimate (for the weekly GPU quota), the quota left, and the hours table of the docs.

A shard's estimate is a session's setup plus its runs' time shared by its `workers`: each run's training
steps (`vadbench.launch.steps`) x the seconds per step its model's kernels measured so far
(`seconds_per_step` in the shard_status.json of a pulled shard of the same model) x 1.2; where that is
unknown, `run_estimate_s` per run; else the shard may run until its deadline (`deadline_s`).
`vadbench kaggle hours X.yaml` prints the table the docs include: each shard's runs, budget, training steps
and the step time under which it fits the deadline with the params' workers.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadbench import records
from vadbench.config import Experiment, RunSpec, expand_runs, load_experiment
from vadbench.launch.kaggle import manifest
from vadbench.launch.kaggle.api import KaggleApi
from vadbench.launch.kaggle.shards import plan_shards
from vadbench.launch.kaggle.spec import KaggleSpec
from vadbench.launch.steps import run_steps, training_steps

log = logging.getLogger(__name__)
SESSION_SETUP_S = 900.0  # a kernel's installs, data copy and checks before its first run: a planning figure
MARGIN = 1.2  # as the kernel's deadline estimate
WEEK_S = 7 * 24 * 3600


def measured_rates(out_root: Path, experiment: str, entries: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per training step by model, from the pulled shard_status.json of shards that ran one model."""
    rates: dict[str, float] = {}
    for entry in entries:
        models = {r[0] for r in entry["runs"]}
        path = out_root / experiment / "downloads" / entry["slug"] / records.SHARD_STATUS_FILE
        if len(models) == 1 and path.is_file():
            rate = json.loads(path.read_text()).get("seconds_per_step")
            if rate:
                rates[models.pop()] = float(rate)
    return rates


def shard_estimate_s(runs: list[RunSpec], spec: KaggleSpec, rates: dict[str, float], val_ratio: float) -> float:
    """Seconds a session of these runs should take (see the module's docstring), at most its deadline."""
    total = 0.0
    for run in runs:
        steps, rate = run_steps(run, val_ratio), rates.get(run.model.name)
        if steps is not None and rate is not None:
            total += steps * rate * MARGIN
        elif spec.run_estimate_s > 0:
            total += spec.run_estimate_s
        else:
            return float(spec.deadline_s)
    return min(SESSION_SETUP_S + total / max(1, spec.workers), float(spec.deadline_s))  # workers share the runs


@dataclass(frozen=True)
class QuotaLeft:
    """The weekly GPU quota: hours used, the total, hours the running shards still hold by their estimates."""

    used_h: float
    total_h: float
    held_h: float
    source: str

    @property
    def left_h(self) -> float:
        return max(0.0, self.total_h - self.used_h - self.held_h)

    def text(self) -> str:
        return (f"weekly GPU quota: {self.used_h:.1f} h used of {self.total_h:.1f} h, {self.held_h:.1f} h held by "
                f"running shards, {self.left_h:.1f} h left ({self.source})")


def quota_left(api: KaggleApi, man: dict[str, Any], spec: KaggleSpec, estimates_s: dict[str, float],
               now: float) -> QuotaLeft:
    """The quota as the service reports it, else estimated from this experiment's sessions and weekly_gpu_hours."""
    active = [e for e in man["shards"] if e["state"] in manifest.ACTIVE]
    held = sum(max(0.0, estimates_s.get(e["slug"], 0.0) / 3600 - _current_hours(e, now)) for e in active)
    reported = api.quota()
    if reported is not None:
        source = "as Kaggle reports it" + (f"; resets {reported.refresh}" if reported.refresh else "")
        return QuotaLeft(reported.used_h, reported.total_h, held, source)
    used = sum(manifest.session_hours(e, now, since=now - WEEK_S) for e in man["shards"])
    return QuotaLeft(used, spec.weekly_gpu_hours, held, "estimated from this experiment's kernel run times over the "
                     f"last 7 days and weekly_gpu_hours {spec.weekly_gpu_hours:g}: the service reports no quota")


def _current_hours(entry: dict[str, Any], now: float) -> float:
    """Hours the shard's current session has run so far."""
    if not entry["sessions"]:
        return 0.0
    session = entry["sessions"][-1]
    start = session.get("started_at") or session.get("pushed_at") or now
    return max(0.0, (session.get("ended_at") or now) - start) / 3600


def hours_table(params_files: list[Path | str], spec: KaggleSpec, shard_by: list[str]) -> str:
    """A Markdown table of each shard: runs, budget, training steps and the step time that fits the deadline."""
    workers = max(1, spec.workers)
    lines = [f"| experiment | shard | runs | budget per run | training steps | fits {spec.deadline_s / 3600:g} h "
             f"({workers} worker{'s' if workers > 1 else ''}) if a step takes under |", "|---|---|---|---|---|---|"]
    for params_file in params_files:
        exp = load_experiment(params_file)
        for runs in plan_shards(exp, shard_by, spec.kernel_prefix).values():
            first = runs[0]
            train = first.model.train
            budget = ", ".join(part for part in (f"{train.max_epochs} epochs" if train.max_epochs > 0 else "",
                                                 f"{train.max_steps:,} steps" if train.max_steps > 0 else "",
                                                 f"batch {train.batch_size}") if part)
            if first.dataset.train_ratio < 1.0:
                budget += f", train_ratio {first.dataset.train_ratio:g}"
            steps = training_steps(runs, exp.evaluation.val_ratio)
            shard = " × ".join(sorted({f"{r.model.name}" for r in runs}) + sorted({r.dataset.name for r in runs}))
            lines.append(f"| {exp.name} | {shard} | {len(runs)} | {budget} | "
                         f"{'—' if steps is None else f'{steps:,}'} | "
                         f"{'— (counts unpublished)' if steps is None else _seconds(spec.deadline_s * workers / steps)} |")
    return "\n".join(lines)


DOCS_MARKER = "<!-- vadbench kaggle hours "


def write_docs_table(doc: Path, spec: KaggleSpec, shard_by: list[str]) -> None:
    """Replace the table after the doc's `<!-- vadbench kaggle hours FILE ... -->` line with hours_table of those files."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith(DOCS_MARKER)), None)
    if at is None:
        from vadbench.errors import ConfigError

        raise ConfigError(f"{doc} has no `{DOCS_MARKER}X.yaml ... -->` line to put the table after")
    files = lines[at].removeprefix(DOCS_MARKER).removesuffix(" -->").split()
    end = at + 1
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    lines[at + 1:end] = hours_table(files, spec, shard_by).splitlines()
    doc.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("hours table of %s written into %s", ", ".join(files), doc)


def _seconds(value: float) -> str:
    return f"{value:,.0f} s" if value >= 100 else f"{value:.3g} s"


def runs_of(exp: Experiment, entry: dict[str, Any]) -> list[RunSpec]:
    """The RunSpecs of a manifest entry's runs."""
    wanted = {tuple(r) for r in entry["runs"]}
    return [r for r in expand_runs(exp) if (r.model.name, r.dataset.name, r.category, r.seed) in wanted]
