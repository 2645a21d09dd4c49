"""What a Kaggle shard notebook (notebooks/kaggle_shard.ipynb) calls once vadbench is installed there.

`banner` prints the machine and stops when a GPU was asked for but torch sees none. `prepare` lays out a
project directory whose relative paths are those of the params file (the experiment file,
notebooks/train_evaluate.ipynb, a link per mount into /kaggle/input), so the runs' configs and config
hashes are those of the same runs on your machine; raw VisA from a read-only input gets a writable
scratch root (outside /kaggle/working) where anomalib's 1cls conversion writes, once per session; inputs
that are not mounted are fetched as the shard's params allow (`kaggle_inputs`). `run_shard` runs the
shard's runs with `runner.run_experiment` under a deadline, and keeps shard_status.json up to date.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd

from vadbench import records
from vadbench.config import RunSpec
from vadbench.data.checks import VISA_CONVERTED, VISA_SPLIT_CSV
from vadbench.errors import KaggleSetupError
from vadbench.launch import kaggle_inputs
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.runner import run_experiment

log = logging.getLogger(__name__)
KAGGLE_INPUT = Path("/kaggle/input")
STATUS_FILE = "shard_status.json"


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


def find_input(name: str, input_root: Path = KAGGLE_INPUT) -> Path:
    """The folder of an attached Kaggle dataset (`owner/slug` or `slug`), at most three levels down."""
    slug = name.split("/")[-1]
    for pattern in (slug, f"*/{slug}", f"*/*/{slug}", f"*/*/*/{slug}"):
        found = sorted(p for p in input_root.glob(pattern) if p.is_dir())
        if found:
            return found[0]
    raise KaggleSetupError(f"dataset {name!r} is not attached under {input_root}; add it to the kernel's data")


def _source_of(target: str, input_root: Path) -> Path:
    parts = target.split("/")  # owner/slug[/sub/dir]
    return find_input("/".join(parts[:2]), input_root).joinpath(*parts[2:])


def writable_visa(source: Path, scratch: Path) -> Path:
    """A writable VisA root for a mounted (read-only) one: a copy in `scratch`, where anomalib's conversion writes.

    anomalib reads and writes only below the root it is given (it refuses links that lead out), so the
    raw release is copied, once per session (a marker file says the copy is complete). An already
    converted upload (the source holds visa_pytorch/, or is that folder) is used without a copy.
    """
    if (source / VISA_CONVERTED).is_dir():
        return source
    if not (source / VISA_SPLIT_CSV).is_file():
        if any((source / c / "train" / "good").is_dir() for c in os.listdir(source)):  # the converted folder itself
            scratch.mkdir(parents=True, exist_ok=True)
            if not (scratch / VISA_CONVERTED).exists():
                (scratch / VISA_CONVERTED).symlink_to(source, target_is_directory=True)
            return scratch
        return source  # not VisA: the dataset check names the problem
    marker = scratch / ".vadbench-copied"
    if not marker.is_file():
        log.info("VisA at %s is read-only: copying it to the scratch root %s for the 1cls conversion", source, scratch)
        shutil.copytree(source, scratch, dirs_exist_ok=True)
        for path in [scratch, *scratch.rglob("*")]:  # copies keep the read-only modes
            path.chmod(path.stat().st_mode | 0o200)
        marker.write_text(str(source))
    return scratch


def prepare(work_dir: str, code_dir: Path, experiment_path: str, experiment_yaml: str, mounts: dict[str, str],
            git_commit: str, input_root: Path = KAGGLE_INPUT, scratch_dir: str = "/tmp/vadbench-scratch",
            fetch: list[str] | None = None, teacher_weights: str = "", output_dir: str = "/kaggle/working/runs"
            ) -> Path:
    """Build the project directory, chdir into it, set the env papermill kernels inherit, fetch what is allowed."""
    root, scratch = Path(work_dir), Path(scratch_dir)
    (root / experiment_path).parent.mkdir(parents=True, exist_ok=True)
    (root / experiment_path).write_text(experiment_yaml, encoding="utf-8")
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(code_dir) / NOTEBOOK, root / "notebooks" / NOTEBOOK)
    for local, target in mounts.items():
        source = _source_of(target, input_root)
        if (source / VISA_SPLIT_CSV).is_file() or (source / VISA_CONVERTED).is_dir():
            source = writable_visa(source, scratch / "visa" / local.replace("/", "_"))
        _link(root / local, source)
        log.info("mounted %s -> %s", local, source)
    os.environ.update({"VADBENCH_NOTEBOOKS": str(root / "notebooks"), "VADBENCH_GIT_COMMIT": git_commit,
                       "TQDM_DISABLE": "1"})
    os.chdir(root)
    facts = []
    if teacher_weights:
        _link(kaggle_inputs.teacher_dir(), _source_of(teacher_weights, input_root))
        facts += [kaggle_inputs.verify_teacher(p, f"mounted {teacher_weights}")
                  for p in sorted(kaggle_inputs.teacher_dir().glob("pretrained_teacher_*.pth"))]
    facts += kaggle_inputs.fetch(fetch or [], scratch)
    if facts:
        Path(output_dir).parent.mkdir(parents=True, exist_ok=True)
        records.write_json_atomic(Path(output_dir).parent / "fetched_inputs.json", {"inputs": facts})
    return root


def _link(link: Path, source: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        link.unlink()
    elif link.is_dir() and not any(link.iterdir()):
        link.rmdir()
    link.symlink_to(source, target_is_directory=True)


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
        self._close(now)
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

    def _close(self, now: float) -> None:
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
    gate = Deadline(started or time.time(), deadline_s, run_estimate_s, Path(output_dir).parent / STATUS_FILE, Path(output_dir))
    gate.write()
    result = run_experiment(experiment_path, output_dir, workers=workers, select=select, gate=gate)
    gate._close(time.time())
    log.info("shard: %d done, %d skipped, %d failed, %d deferred", result.done, result.skipped,
             len(result.failed or []), len(result.deferred or []))
    rows = [{"model": r.get("model"), "category": r.get("category"), "seed": r.get("seed"), "status": r.get("status"),
             "image_auroc": (r.get("metrics") or {}).get("image_auroc"), "error": r.get("error")}
            for r in records.load_records(output_dir)]
    rows += [{"run": label, "status": "deferred"} for label in gate.state["deferred"]]
    return pd.DataFrame(rows)


def deferred_runs(status_path: Path) -> list[str]:
    """Labels of the runs a shard deferred (from its shard_status.json)."""
    return list(json.loads(Path(status_path).read_text()).get("deferred", []))
