"""Measure what the image cache saves on full-size images (not a test; run by hand, on an idle machine).

    python benchmarks/cache_cost.py /tmp/mvtec-replica [toothbrush] [--models padim,draem,efficientad_s]

Builds (once) a replica of an MVTec AD category at its real counts and size (1024 px RGB PNGs, as
benchmarks/decode_cost.py), then runs each model through the real pipeline (vadbench.run.evaluate) three times:
without the cache, with a cold cache (built before training) and with a warm one, and prints per run: the
cache's build time, training seconds per step, the loader's time per training batch (the train dataloader
alone) and the evaluation's harness per image (the pass minus its own forward passes).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml
from decode_cost import build

from vadbench import config
from vadbench.data import cache, datamodules
from vadbench.models.build import build_model
from vadbench.run import evaluate

MODELS = {
    "padim": {"kind": "padim", "image_size": 256, "train": {"max_epochs": 1, "batch_size": 8},
              "params": {"backbone": "mobilenet_v2", "layers": ["features.3", "features.6", "features.13"],
                         "n_features": 100}},
    "draem": {"kind": "draem", "image_size": 256, "train": {"max_steps": 4, "batch_size": 8},
              "params": {"anomaly_source": "perlin"}},
    "efficientad_s": {"kind": "efficientad", "image_size": 256, "train": {"max_steps": 24, "batch_size": 1},
                      "params": {"model_size": "small", "teacher": "random", "imagenet_dir": "PENALTY"}},
}


def experiment(root: Path, category: str, models: list[str], penalty: Path) -> Path:
    """An experiment file with the chosen models on the replica, on the CPU."""
    specs = [{"name": name, **yaml.safe_load(yaml.safe_dump(MODELS[name]).replace("PENALTY", str(penalty)))}
             for name in models]
    exp = {"name": "cache_cost", "device": "cpu", "models": specs,
           "datasets": [{"name": "mvtec", "kind": "mvtec_ad", "root": str(root), "categories": [category]}],
           "evaluation": {"eval_batch_size": 8, "timing_warmup": 1, "timing_iterations": 3}}
    path = root / "cache_cost.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def loader_ms_per_batch(run: config.RunSpec) -> float:
    """The train dataloader alone (decode, resize or cache read, collate), ms per batch, over one epoch."""
    module = datamodules.build_datamodule(run, run.model.train.batch_size)
    cache.warm(module, build_model(run.model, run.seed).module.pre_processor.transform) if run.evaluation.image_cache \
        else _plain_setup(module, run)
    started, batches = time.perf_counter(), 0
    for _ in module.train_dataloader():
        batches += 1
    return (time.perf_counter() - started) / batches * 1e3


def _plain_setup(module, run: config.RunSpec) -> None:
    """anomalib's setup with the model's Resize on each subset, as training sees it, without the cache."""
    from lightning.pytorch.trainer.states import TrainerFn

    module.setup(TrainerFn.FITTING)
    transform = build_model(run.model, run.seed).module.pre_processor.transform
    module._update_subset_augmentations(module.train_data, None, transform)


def measure(run: config.RunSpec, what: str) -> None:
    use = what != "off"
    run = dataclasses.replace(run, evaluation=dataclasses.replace(run.evaluation, image_cache=use))
    loader_ms = loader_ms_per_batch(run)
    if what == "cold":
        shutil.rmtree(cache.cache_folder(), ignore_errors=True)
    t = evaluate.train_and_evaluate(run).record
    timing, steps = t["timing"], t["training"]["steps_run"]
    model_ms = timing["test_model_seconds"] / timing["test_images"] * 1e3
    print(f"{run.model.name:14s} cache {what:4s}: build {timing.get('image_cache_seconds', 0):6.2f} s "
          f"({timing.get('image_cache_decoded', 0)} decoded), train {timing['fit_seconds'] / steps * 1e3:8.1f} ms/step "
          f"({steps} steps of {run.model.train.batch_size}), loader {loader_ms:7.1f} ms/batch, "
          f"eval harness {timing['harness_ms_per_image']:6.2f} ms/img, model {model_ms:6.1f} ms/img",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("category", nargs="?", default="toothbrush")
    parser.add_argument("--models", default="padim,draem,efficientad_s")
    args = parser.parse_args()
    files = build(args.root, args.category)
    penalty = args.root / "penalty"
    if not penalty.is_dir():
        from vadbench.data.demo import build_penalty_images

        build_penalty_images(penalty, n=8)
    with tempfile.TemporaryDirectory() as scratch:
        os.environ[cache.IMAGE_CACHE_ENV] = scratch
        path = experiment(args.root, args.category, args.models.split(","), penalty)
        print(f"{files} files of {args.category} (1024 px) on {os.cpu_count()} cores")
        for run in config.expand_runs(config.load_experiment(path)):
            for what in ("off", "cold", "warm"):
                measure(run, what)


if __name__ == "__main__":
    main()
