"""One run: train with anomalib, score held-out and test images, compute metrics, time the model.

This is what notebooks/train_evaluate.ipynb calls; it returns a RunResult that `save_result` writes
(record, scores, figure). A failure is recorded where it happens, with its stage as data.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from vadbench import records, stats
from vadbench.config import RunSpec
from vadbench.data import cache, datamodules, splits
from vadbench.models import build, schedules
from vadbench.run import figures, learning_rates, metrics, original, speed, timing
from vadbench.run.environment import environment_info, resolve_device
from vadbench.run.progress import Progress, TrainingProgress

log = logging.getLogger(__name__)


@dataclass
class Scored:
    """Raw outputs of the model over one subset, on the host."""

    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    masks: np.ndarray
    model_seconds: float = 0.0  # time in the model's forward passes (synchronised), within the pass


@dataclass
class RunResult:
    """Everything a finished run produced."""

    run: RunSpec
    record: dict[str, Any]
    scores: pd.DataFrame
    examples: dict[str, Any]

    def summary(self) -> pd.DataFrame:
        """One-row table of the headline numbers."""
        m, t = self.record["metrics"], self.record["timing"]
        row = {"run": self.run.label, **{k: m[k] for k in records.METRICS if not k.endswith("_max")},
               "pipeline_img_per_s": t["pipeline_img_per_s"], "model_img_per_s": t["model_img_per_s"],
               "harness_ms_per_image": t["harness_ms_per_image"], "fit_seconds": t["fit_seconds"]}
        return pd.DataFrame([row]).set_index("run").round(4)


def make_engine(run: RunSpec, device: torch.device, work_dir: Path, *callbacks: Any) -> Engine:
    """anomalib Engine with the run's step budget, no validation loop, no checkpoint files, our progress display
    and any further callbacks (the learning-rate trace)."""
    return Engine(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        max_steps=run.model.train.max_steps,
        max_epochs=run.model.train.max_epochs,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=work_dir, save_top_k=0, save_last=False), TrainingProgress(run.label),
                   *callbacks],
        default_root_dir=work_dir,
    )


@torch.inference_mode()
def score_loader(module: Any, loader: Any, device: torch.device, what: str = "") -> Scored:
    """Run the model over a dataloader: pre-process, forward, upsample maps to mask size, copy to host.

    The forward passes are timed on their own too (synchronised), so that the harness's share of the pass
    is known. what: when given, images scored are shown as progress under this name.
    """
    paths, labels, scores, maps, masks = [], [], [], [], []
    progress = Progress(f"scoring {what}", len(loader.dataset), "images") if what else None
    model_seconds = 0.0
    for batch in loader:
        x = module.pre_processor(batch.image.to(device, non_blocking=True))
        with timing.Stopwatch(device) as forward:
            out = module.model(x)
        model_seconds += forward.seconds
        amap = out.anomaly_map
        if amap.dim() == 3:
            amap = amap.unsqueeze(1)
        mask = batch.gt_mask
        if mask is None:  # a folder dataset without masks: an all-normal mask, pixel metrics become undefined
            mask = torch.zeros((amap.shape[0], *batch.image.shape[-2:]), dtype=torch.bool)
        amap = F.interpolate(amap.float(), size=mask.shape[-2:], mode="bilinear", align_corners=False)
        maps.append(amap[:, 0].cpu().numpy())
        masks.append(mask.bool().reshape(amap.shape[0], *mask.shape[-2:]).cpu().numpy())
        scores.append(out.pred_score.reshape(-1).float().cpu().numpy())
        labels.append(batch.gt_label.reshape(-1).int().cpu().numpy())
        paths.extend(str(p) for p in batch.image_path)
        if progress is not None:
            progress.update(len(batch.image_path))
    if progress is not None:
        progress.close()
    return Scored(paths, np.concatenate(labels), np.concatenate(scores), np.concatenate(maps), np.concatenate(masks),
                  model_seconds)


def fit_map_normalisation(module: Any, loader: Any, device: torch.device) -> None:
    """EfficientAD: fit the map-normalisation quantiles on held-out TRAINING images (anomalib's own code)."""
    module.to(device).eval()
    module.model.quantiles.update(module.map_norm_quantiles(loader))


class Stage:
    """The stage a run is in (building, caching, training, scoring, metrics, timing, counting), so that a failure
    records where it happened; the wall seconds of each (`timing.phases`) and, with a device, each stage's peak
    memory (`peak_mem_mb_<stage>`, reset when a stage begins)."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.name, self.device, self.memory, self.seconds = "building", device, {}, {}
        self.since = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[self.name] = round(self.seconds.get(self.name, 0.0) + now - self.since, 3)
        self.since = now
        if self.device is not None:
            if self.name != "building":
                self.memory[f"peak_mem_mb_{self.name}"] = timing.peak_memory_since_reset(self.device)
            timing.reset_peak_memory(self.device)
        self.name = name


class OutOfMemoryAtBatch(RuntimeError):
    """CUDA ran out of memory; carries the stage and the batch size that failed (and names them)."""

    def __init__(self, stage: str, batch_size: int, cause: str) -> None:
        super().__init__(f"CUDA out of memory in {stage} at batch size {batch_size}: lower the batch size ({cause})")
        self.stage, self.batch_size = stage, batch_size


@contextlib.contextmanager
def out_of_memory_names(stage: str, batch_size: int):
    """Re-raise a CUDA out-of-memory error as one that names the stage and batch size (kept in the failed record)."""
    try:
        yield
    except RuntimeError as exc:
        if not timing._is_oom(exc):
            raise
        raise OutOfMemoryAtBatch(stage, batch_size, str(exc).splitlines()[0][:200]) from exc


def train_and_evaluate(run: RunSpec, run_dir: Path | str | None = None) -> RunResult:
    """Train one model on one category, then evaluate and time it.

    With run_dir, a failure first writes the run's `failed` record there (with the stage it failed in),
    then re-raises.
    """
    started, stage = records.now(), Stage()
    try:
        return _train_and_evaluate(run, started, stage)
    except Exception as exc:
        if run_dir is not None:
            error = f"{type(exc).__name__}: {exc}"
            records.write_record(run_dir, records.failed_record(run, error, started, stage.name,
                                                                getattr(exc, "batch_size", None)))
        raise


VAL_NAMES = {"train": "held-out train images", "test": "the test set (anomalib's same_as_test)",
             "test_half": "half of the test set (anomalib's from_test)"}


def thresholds_for(run: RunSpec, val: Scored) -> metrics.Thresholds:
    """Thresholds on the validation images as the run's protocol says; the method names what really happened."""
    where = VAL_NAMES[run.val_source]
    if run.evaluation.protocol == "study_replay":
        return metrics.adaptive_thresholds(val.labels, val.scores, val.masks, val.maps, where)
    return metrics.fit_thresholds(val.scores, val.maps, run.evaluation.image_threshold_quantile,
                                  run.evaluation.pixel_threshold_quantile, where)


def test_metrics(run: RunSpec, test: Scored, thresholds: metrics.Thresholds, dataset: Any) -> dict[str, Any]:
    """The metrics of the scored test images with their intervals; pixel metrics by the run's pixel protocol."""
    result = metrics.compute_metrics(test.labels, test.scores, test.masks, test.maps, thresholds)
    if run.evaluation.pixel_protocol == "original":
        full = original.accumulate(test.maps, test.paths, original.mask_paths_of(dataset, test.paths), thresholds.pixel)
        result.update(original.original_metrics(full))
        counts, note = full, " at each mask's original size"
    else:
        counts, note = stats.pixel_statistics(test.masks, test.maps, thresholds.pixel), ""
    result.update(stats.intervals(test.labels, test.scores, thresholds.image, counts, run.seed,
                                  result["pixel_auroc"], pixel_note=note))
    return result


def _train_and_evaluate(run: RunSpec, started: str, stage: Stage) -> RunResult:
    device = stage.device = resolve_device(run.device)
    seed_everything(run.seed, workers=True, verbose=False)
    built = build.build_model(run.model, run.seed)
    datamodule = datamodules.build_datamodule(run, run.model.train.batch_size, pin_memory=device.type == "cuda")
    cache_facts = {}
    if run.evaluation.image_cache:
        stage("caching")
        cache_facts = cache.warm(datamodule, built.module.pre_processor.transform)
    log.info("training %s", run.label)
    stage("training")
    rates = learning_rates.LearningRates()
    with tempfile.TemporaryDirectory(prefix="vadbench-engine-") as work_dir:
        engine = make_engine(run, device, Path(work_dir), rates)
        with timing.Stopwatch(device) as fit_clock, out_of_memory_names("training", run.model.train.batch_size):
            engine.fit(built.module, datamodule=datamodule)
    stage("scoring")
    module = built.module.to(device).eval()
    if built.model_class == "EfficientAd":
        fit_map_normalisation(module, datamodule.val_dataloader(), device)
    val = score_loader(module, datamodule.val_dataloader(), device)
    thresholds = thresholds_for(run, val)
    with timing.Stopwatch(device) as test_clock, out_of_memory_names("scoring", run.evaluation.eval_batch_size):
        test = score_loader(module, datamodule.test_dataloader(), device, what="test images")
    stage("metrics")
    result_metrics = test_metrics(run, test, thresholds, datamodule.test_data)
    stage("timing")
    shape = (3, run.model.image_size, run.model.image_size)
    model_times = timing.latency_figures(module.model, shape, batch_size=run.evaluation.eval_batch_size, device=device,
                                         warmup=run.evaluation.timing_warmup, iterations=run.evaluation.timing_iterations)
    stage("counting")
    size_figures, speed_rows = speed_section(run, module.model, shape, device)
    stage("done")
    pipeline = timing.pipeline_figures(len(test.labels), test_clock.seconds, run.evaluation.eval_batch_size)
    record = {
        "status": "ok", "error": None, **records.identity(run), "protocol": run.evaluation.protocol,
        "pixel_protocol": run.evaluation.pixel_protocol,
        "model_class": built.model_class,
        "metrics": result_metrics,
        "timing": {"fit_seconds": fit_clock.seconds, **pipeline, **model_times, "test_model_seconds": test.model_seconds,
                   **cache_facts,
                   "harness_ms_per_image": timing.harness_ms_per_image(test_clock.seconds, test.model_seconds,
                                                                       len(test.labels)),
                   **size_figures, **timing.peak_memory(device), **stage.memory, "phases": stage.seconds},
        "speed": speed_rows,
        "split": split_facts(run, datamodule),
        "training": {"max_steps": run.model.train.max_steps, "max_epochs": run.model.train.max_epochs,
                     "steps_run": int(engine.trainer.global_step), "epochs_run": int(engine.trainer.current_epoch),
                     "train_batch_size": run.model.train.batch_size, "lr_schedule": schedules.describe(run.model),
                     "learning_rates": rates.trace, **built.facts},
        "environment": environment_info(device),
        "started_at": started, "finished_at": records.now(),
    }
    examples = pick_examples(test, datamodule.test_data, thresholds.pixel, run.evaluation.figure_images)
    return RunResult(run, record, scores_table(test, thresholds.image, run), examples)


def speed_section(run: RunSpec, model: torch.nn.Module, shape: tuple[int, int, int], device: torch.device
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Parameter count and FLOPs (always), and the speed protocol's rows when run.speed asks for them."""
    size = speed.size_figures(model, shape, device)
    if run.speed.enabled == "never" or (run.speed.enabled == "auto" and device.type != "cuda"):
        return size, []
    return size, speed.protocol_rows(model, shape, device, run.speed)


def split_facts(run: RunSpec, datamodule: Any) -> dict[str, Any]:
    """Where thresholds were fitted, the split and undersampling settings and the resulting image counts."""
    held_out = run.val_source == "train"
    return {"val_source": run.val_source, "val_ratio": run.evaluation.val_ratio if held_out else None,
            "train_ratio": run.dataset.train_ratio, "split_seed": run.seed, **splits.split_counts(datamodule)}


def scores_table(test: Scored, image_threshold: float, run: RunSpec) -> pd.DataFrame:
    """One row per test image: path, key (its identity below the dataset root, records.image_key), label, defect
    type (its folder), raw score, prediction."""
    return pd.DataFrame({
        "path": test.paths,
        "key": [records.image_key(p, run.category, run.dataset.kind) for p in test.paths],
        "label": test.labels,
        "defect_type": [Path(p).parent.name for p in test.paths],
        "score": test.scores,
        "predicted": (test.scores > image_threshold).astype(int),
    })


def pick_examples(test: Scored, dataset: Any, pixel_threshold: float, n: int) -> dict[str, Any]:
    """A few test images for the figure: the first of each folder (good, then each defect type)."""
    defect = [Path(p).parent.name for p in test.paths]
    chosen = [defect.index(kind) for kind in dict.fromkeys(defect)][:n]
    return {
        "titles": [f"{defect[i]} (score {test.scores[i]:.3g})" for i in chosen],
        "images": [dataset[i].image.permute(1, 2, 0).numpy() for i in chosen],
        "masks": [test.masks[i] for i in chosen],
        "maps": [test.maps[i] for i in chosen],
        "pred_masks": [test.maps[i] > pixel_threshold for i in chosen],
    }


def save_result(result: RunResult, out_dir: Path | str) -> Path:
    """Write scores.csv, the anomaly-map figure and (last, atomically) record.json, whose `timing.phases` gains the
    seconds the figure took."""
    import matplotlib.pyplot as plt

    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result.scores.to_csv(out_dir / records.SCORES_FILE, index=False)
    fig = figures.anomaly_map_grid(result.examples, title=result.run.label)
    fig.savefig(out_dir / records.FIGURE_FILE, dpi=80)
    plt.close(fig)
    phases = result.record.setdefault("timing", {}).setdefault("phases", {})
    phases["figures"] = round(time.monotonic() - started, 3)
    return records.write_record(out_dir, result.record)
