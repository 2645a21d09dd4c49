"""A Kaggle shard's machine and runs: `banner` prints the machine and stops when a GPU was asked for but torch
sees none; `run_shard` runs the shard's runs with `runner.run_experiment` under a deadline, and keeps
shard_status.json (finished, failed, deferred) up to date beside the runs root.
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd

from vadbench import records
from vadbench.config import RunSpec
from vadbench.errors import KaggleSetupError
from vadbench.launch.runner import run_experiment

log = logging.getLogger(__name__)


def banner(require_gpu: bool) -> dict[str, str]:
    """Log GPU, driver, CUDA, torch, anomalib and vadbench (version, commit); stop if a GPU is required but absent."""
    import anomalib
    import torch

    import vadbench
    from vadbench import _build  # written into the wheel

    cuda = torch.cuda.is_available()
    facts = {"gpu": torch.cuda.get_device_name(0) if cuda else "none", "cuda": str(torch.version.cuda),
             "torch": torch.__version__, "anomalib": anomalib.__version__, "vadbench": vadbench.__version__,
             "commit": _build.BUILD_COMMIT, "vadbench_path": str(Path(vadbench.__file__).parent)}
    smi = shutil.which("nvidia-smi")
    if smi:
        done = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
        facts["nvidia_smi"] = done.stdout.strip() or done.stderr.strip()
    for key, value in facts.items():
        log.info("%-13s %s", key, value)
    if require_gpu and not cuda:
        raise KaggleSetupError("this shard asked for a GPU but torch sees none: in the kernel's settings choose the "
                               "accelerator (or push with enable_gpu: false to run on the CPU)")
    return facts


class Deadline:
    """Starts a run only if it ends before the deadline by the estimate: the longest run so far x 1.2
    (before one has finished, `first_estimate_s`). Logs progress and keeps shard_status.json current."""

    MARGIN = 1.2

    def __init__(self, started: float, deadline_s: float, first_estimate_s: float, status_path: Path,
                 output_root: Path) -> None:
        self.output_root = output_root
        self.started, self.deadline_s, self.first_estimate_s = started, deadline_s, first_estimate_s
        self.status_path, self.last_start, self.longest = status_path, None, 0.0
        self.state: dict[str, list[str]] = {"finished": [], "failed": [], "deferred": []}
        self.current: RunSpec | None = None

    def __call__(self, run: RunSpec, index: int, total: int) -> bool:
        now = time.time()
        self.close(now)
        estimate = self.longest * self.MARGIN if self.longest else self.first_estimate_s
        left = self.started + self.deadline_s - now
        if estimate > left or left <= 0:
            log.warning("[%d/%d] %s deferred: estimate %.0f s, %.0f s left before the deadline", index, total,
                        run.label, estimate, left)
            self.state["deferred"].append(run.label)
            self.write()
            return False
        log.info("[%d/%d] %s starting: %.0f s into the shard, estimate %.0f s, %.0f s left before the deadline",
                 index, total, run.label, now - self.started, estimate, left)
        self.current, self.last_start = run, now
        return True

    def close(self, now: float) -> None:
        """Tally the run started last (finished or failed, by its record) and its duration."""
        if self.current is None:
            return
        self.longest = max(self.longest, now - self.last_start)
        ok = records.is_finished(self.run_dir(self.current), self.current.config_hash)
        self.state["finished" if ok else "failed"].append(self.current.label)
        self.current = None
        self.write()

    def run_dir(self, run: RunSpec) -> Path:
        return records.run_dir(self.output_root, run.experiment, run.model.name, run.dataset.name,
                               run.category, run.seed)

    def write(self) -> None:
        records.write_json_atomic(self.status_path, {**self.state, "deadline_s": self.deadline_s,
                                                     "longest_run_s": round(self.longest, 1)})


def run_shard(experiment_path: str, runs: list, output_dir: str, workers: int = 1, started: float | None = None,
              deadline_s: float = 41400.0, run_estimate_s: float = 0.0) -> pd.DataFrame:
    """Run this shard's runs before the deadline and return one row per run (status, image AUROC, error)."""
    select = {(m, d, c, int(s)) for m, d, c, s in runs}
    status_path = Path(output_dir).parent / records.SHARD_STATUS_FILE
    gate = Deadline(started or time.time(), deadline_s, run_estimate_s, status_path, Path(output_dir))
    gate.write()
    result = run_experiment(experiment_path, output_dir, workers=workers, select=select, gate=gate)
    gate.close(time.time())
    log.info("shard: %d done, %d skipped, %d failed, %d deferred", result.done, result.skipped,
             len(result.failed or []), len(result.deferred or []))
    rows = [{"model": r.get("model"), "category": r.get("category"), "seed": r.get("seed"), "status": r.get("status"),
             "image_auroc": (r.get("metrics") or {}).get("image_auroc"), "error": r.get("error")}
            for r in records.load_records(output_dir)]
    rows += [{"run": label, "status": "deferred"} for label in gate.state["deferred"]]
    return pd.DataFrame(rows)
