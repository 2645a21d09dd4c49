"""`vadbench speed`: time any model an experiment describes, with no dataset (random input at its image size).

The same protocol as a record's `speed` rows (`protocol_rows`, on vadbench.run.timing's loop): warm-up,
synchronise, median/p90 latency, throughput, at each precision × batch size on a fixed on-device input, plus
the paper's host-to-host latency; parameters, FLOPs and peak memory per model. Inputs that do not change a model's speed are
replaced so that nothing needs to be on disk: DRÆM gets Perlin anomalies, EfficientAD a random teacher;
memory-bank models (PatchCore, PaDiM) are fitted on a few random images first. vadbench.report.speed sets
published figures beside these rows.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path

import pandas as pd
import torch

from vadbench.config import EfficientAdParams, Experiment, ModelSpec, SpeedSpec
from vadbench.models.build import build_model
from vadbench.run import timing
from vadbench.run.environment import device_name, resolve_device

log = logging.getLogger(__name__)

FIT_IMAGES = 4  # random images a memory-bank model is fitted on before it can infer
#: `vadbench speed` on a CPU: about a minute per model (fp32 only: a CPU emulates fp16, slower than fp32).
#: On a GPU the defaults are SpeedSpec's own (100 warm-ups, 200 timed passes, fp32 and fp16).
CPU_DEFAULTS = SpeedSpec("always", warmup=3, iterations=20, precisions=["fp32"], budget_s=5.0)


def speed_settings(device: torch.device, **given) -> SpeedSpec:
    """The protocol for this device: its defaults with what the user gave; fp16 on a CPU is refused with the reason."""
    speed = dataclasses.replace(SpeedSpec("always") if device.type == "cuda" else CPU_DEFAULTS, **given)
    if device.type != "cuda" and "fp16" in speed.precisions:
        from vadbench.errors import ConfigError

        raise ConfigError("fp16 on a CPU: torch emulates it there, slower than fp32, so its figures say nothing about "
                          "a GPU's; time fp32 or bf16 (--precisions fp32,bf16) here, and fp16 on a CUDA device")
    return speed


def timing_spec(spec: ModelSpec, scratch: Path) -> ModelSpec:
    """The model with outside inputs that do not change its speed: Perlin anomalies, a random teacher, one penalty image."""
    params = dict(spec.params)
    if spec.kind == "draem":
        params["anomaly_source"] = "perlin"
    if isinstance(spec.settings, EfficientAdParams):
        penalty = scratch / "penalty" / "x"
        penalty.mkdir(parents=True, exist_ok=True)
        from PIL import Image

        Image.new("RGB", (8, 8)).save(penalty / "0.png")
        params.update(teacher="random", imagenet_dir=str(penalty.parent))
        params.pop("distill", None)
    return dataclasses.replace(spec, params=params)


def model_for_timing(spec: ModelSpec, device: torch.device) -> torch.nn.Module:
    """The anomalib torch model of spec in eval mode on device, ready to infer (fitted on random images if needed)."""
    with tempfile.TemporaryDirectory(prefix="vadbench-speed-") as scratch:
        module = build_model(timing_spec(spec, Path(scratch)), seed=0).module.to(device)
    if callable(getattr(module, "fit", None)):  # memory-bank models: collect embeddings, then fit
        module.model.train()
        with torch.no_grad():
            module.model(torch.rand(FIT_IMAGES, 3, spec.image_size, spec.image_size, device=device))
        module.fit()
    return module.model.eval()


def size_figures(model: torch.nn.Module, shape: tuple[int, int, int], device: torch.device) -> dict[str, int | None]:
    """Parameter count and FLOPs per image (None, logged, when torch's counter cannot trace the model)."""
    try:
        flops = timing.flops_per_image(model, shape, device)
    except Exception as exc:  # the counter is a dispatch-level trace; a failure must not lose the run
        log.warning("FLOP count failed: %s: %s", type(exc).__name__, exc)
        flops = None
    return {"model_params": timing.parameter_count(model), "model_flops_per_image": flops}


def protocol_rows(model: torch.nn.Module, shape: tuple[int, int, int], device: torch.device,
                  speed: SpeedSpec) -> list[dict]:
    """The speed protocol, for records and `vadbench speed` alike: each precision × batch size on a fixed on-device
    input, then the papers' host-to-host latency per precision (when `paper_protocol`)."""
    if speed.channels_last:
        model = model.to(memory_format=torch.channels_last)
    rows = timing.on_device_rows(model, shape, device, batch_sizes=speed.batch_sizes, precisions=speed.precisions,
                                 warmup=speed.warmup, iterations=speed.iterations, channels_last=speed.channels_last,
                                 budget_s=speed.budget_s)
    if speed.paper_protocol:
        rows += [timing.host_to_host_latency(lambda x: model(x).anomaly_map, shape, device, precision=p,
                                             warmup=speed.warmup, iterations=speed.iterations, budget_s=speed.budget_s)
                 for p in speed.precisions]
    return [dataclasses.asdict(row) for row in rows]


def model_rows(spec: ModelSpec, speed: SpeedSpec, device: torch.device) -> list[dict]:
    """One tidy row per protocol × precision × batch size of a model built from spec, each with its size figures."""
    model = model_for_timing(spec, device)
    shape = (3, spec.image_size, spec.image_size)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rows = protocol_rows(model, shape, device, speed)
    size = {"model_kind": spec.kind, "image_size": spec.image_size, **size_figures(model, shape, device),
            **timing.peak_memory(device)}
    return [{"model": spec.name, **size, **row} for row in rows]


TRAIN_WARMUP = 5  # untimed training steps before the timed ones


def training_rows(spec: ModelSpec, device: torch.device, steps: int) -> list[dict]:
    """EfficientAD's training speed on random data: seconds per step of its training loop (student and
    autoencoder forward on an image and a penalty image, the three losses, backward, Adam step), fp32 as anomalib
    trains; with the time the experiment's own max_steps would take at that rate. Other kinds: no row."""
    if spec.kind != "efficientad" or steps < 1:
        return []
    with tempfile.TemporaryDirectory(prefix="vadbench-speed-") as scratch:
        module = build_model(timing_spec(spec, Path(scratch)), seed=0).module
    model, settings = module.model.to(device).train(), spec.settings
    optimizer = torch.optim.Adam([*model.student.parameters(), *model.ae.parameters()], lr=settings.lr,
                                 weight_decay=settings.weight_decay)
    batch = spec.train.batch_size
    image, penalty = (torch.rand(batch, 3, spec.image_size, spec.image_size, device=device) for _ in range(2))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(model(batch=image, batch_imagenet=penalty)).backward()
        optimizer.step()

    res = timing.time_calls(step, batch, device, warmup=TRAIN_WARMUP, iterations=steps)
    total = spec.train.max_steps
    note = f"{total} steps (max_steps) at this rate: {total * res.median_ms / 3.6e6:.3g} h" if total and total > 1 else ""
    row = timing.SpeedRow("training", "fp32", batch, batch, False, TRAIN_WARMUP, steps, res.median_ms, res.p90_ms,
                          res.img_per_s, note)
    return [dataclasses.asdict(row)]


def speed_table(exp: Experiment, given: dict | None = None, device: str = "auto", model: str | None = None,
                train_steps: int = 0) -> pd.DataFrame:
    """Rows for every model of the experiment (or the one named), with the device they were timed on.

    given: SpeedSpec fields the user set (the rest: the device's defaults, `speed_settings`);
    train_steps: EfficientAD, also time this many training steps on random data (0: none)."""
    specs = [m for m in exp.models if model in (None, m.name)]
    if not specs:
        from vadbench.errors import ConfigError

        raise ConfigError(f"{exp.source}: no model {model!r}; models: {[m.name for m in exp.models]}")
    where = resolve_device(device)
    speed = speed_settings(where, **(given or {}))
    log.info("protocol on %s: %d warm-up + up to %d timed passes%s, batch %s, %s", where, speed.warmup,
             speed.iterations, f" or {speed.budget_s:g} s" if speed.budget_s else "",
             ",".join(map(str, speed.batch_sizes)), ",".join(speed.precisions))
    rows = []
    for spec in specs:
        log.info("timing %s (%s, %d px) on %s", spec.name, spec.kind, spec.image_size, where)
        rows += model_rows(spec, speed, where)
        rows += [{**rows[-1], **row} for row in training_rows(spec, where, train_steps)]
    table = pd.DataFrame(rows)
    table.insert(1, "device", where.type)
    table.insert(2, "device_name", device_name(where))
    sizes = {m.name: getattr(m.settings, "model_size", "") for m in exp.models}
    table.insert(4, "model_size", [sizes[name] for name in table["model"]])
    return table
