"""Speed figures: model latency/throughput and end-to-end pipeline throughput.

Two different numbers with different names (docs/records.md, `timing`):

* model figures (``model_*``): the forward pass alone, on a fixed input already on the device,
  after warm-up, each timed pass bracketed by a device synchronise;
* pipeline figures (``pipeline_*``): wall time of the whole evaluation pass, measured by the caller.

Only torch and the standard library are used here.
"""
from __future__ import annotations

import logging
import math
import numbers
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

log = logging.getLogger(__name__)

_clock: Callable[[], float] = time.perf_counter  # replaced in tests by a fake clock


@dataclass(frozen=True)
class LatencyResult:
    """Latency of one forward pass over a fixed batch."""

    batch_size: int
    warmup: int
    iterations: int
    median_ms: float  # per forward pass (whole batch)
    p90_ms: float
    mean_ms: float
    img_per_s: float  # batch_size / (median seconds per pass)


def _as_device(device: torch.device | str | None) -> torch.device:
    """A torch.device; None means CPU."""
    return torch.device("cpu") if device is None else torch.device(device)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on a CUDA device; a no-op on any other device."""
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ValueError unless value is an int >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _summarise(seconds: list[float], batch_size: int, warmup: int) -> LatencyResult:
    """Median, p90 and mean of per-pass times, and images per second at the median."""
    median_s = _percentile(seconds, 50)
    return LatencyResult(
        batch_size=batch_size,
        warmup=warmup,
        iterations=len(seconds),
        median_ms=median_s * 1e3,
        p90_ms=_percentile(seconds, 90) * 1e3,
        mean_ms=sum(seconds) / len(seconds) * 1e3,
        img_per_s=batch_size / median_s if median_s > 0 else math.inf,
    )


def measure_latency(
    fn: Callable[[torch.Tensor], Any],
    example: torch.Tensor,
    *,
    warmup: int = 5,
    iterations: int = 20,
    device: torch.device | str | None = None,
    budget_s: float = 0.0,
) -> LatencyResult:
    """Time fn on a fixed input already on the device.

    `warmup` untimed passes, then `iterations` passes each timed on its own with a synchronise
    before and after (perf_counter), all under torch.inference_mode(). example's first dimension
    is the batch size; device defaults to example.device; budget_s > 0 stops the timed passes early once
    that many seconds are spent (after MIN_TIMED passes). Putting a model in eval mode is the caller's job.
    """
    _check_int("warmup", warmup, 0)
    _check_int("iterations", iterations, 1)
    if not isinstance(example, torch.Tensor) or example.dim() < 1:
        raise ValueError("example must be a tensor with a batch dimension")
    device = example.device if device is None else torch.device(device)
    if example.device.type != device.type:
        log.warning("example is on %s but timing synchronises %s", example.device, device)
    with torch.inference_mode():
        result = time_calls(lambda: fn(example), int(example.shape[0]), device, warmup=warmup, iterations=iterations,
                            budget_s=budget_s)
    log.debug("latency on %s: %s", device, result)
    return result


MIN_TIMED = 3  # timed passes kept even when a time budget runs out first
CPU_BUDGET_S = 0.5  # a record's latency figures on a CPU: seconds of warm-up, and of timed passes, per measurement


def time_calls(call: Callable[[], Any], batch_size: int, device: torch.device | str, *, warmup: int,
               iterations: int, budget_s: float = 0.0) -> LatencyResult:
    """`warmup` untimed calls, then up to `iterations` calls each timed on its own between two device synchronises;
    with budget_s > 0, the untimed calls stop after budget_s (never before one) and the timed ones once their total
    passes budget_s (never before MIN_TIMED of them)."""
    _check_int("warmup", warmup, 0)
    _check_int("iterations", iterations, 1)
    seconds: list[float] = []
    start, warmed = time.perf_counter(), 0
    while warmed < warmup and not (budget_s > 0 and warmed >= 1 and time.perf_counter() - start >= budget_s):
        call()
        warmed += 1
    for _ in range(iterations):
        synchronize(device)
        start = _clock()
        call()
        synchronize(device)
        seconds.append(_clock() - start)
        if budget_s > 0 and len(seconds) >= MIN_TIMED and sum(seconds) >= budget_s:
            break
    return _summarise(seconds, batch_size, warmed)


class Stopwatch:
    """Wall time of a block, synchronising the device on entry and exit.

    ``with Stopwatch(device) as sw: ...`` then ``sw.seconds``.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = _as_device(device)
        self.seconds: float | None = None
        self._start: float | None = None

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self.seconds = None
        self._start = _clock()
        return self

    def __exit__(self, *exc_info: object) -> None:
        synchronize(self.device)
        self.seconds = _clock() - self._start


def _check_shape(image_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Validate a (channels, height, width) shape."""
    shape = tuple(image_shape)
    positive = all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
    if len(shape) != 3 or not positive:
        raise ValueError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _random_batch(shape: tuple[int, ...], device: torch.device, seed: int) -> torch.Tensor:
    """Seeded uniform random input created directly on the device."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.rand(shape, generator=generator, device=device)


def latency_figures(fn: Callable[[torch.Tensor], Any], image_shape: tuple[int, int, int], *, batch_size: int,
                    device: torch.device | str, warmup: int, iterations: int, seed: int = 0) -> dict[str, float]:
    """Model figures for a record: latency at batch 1, throughput at `batch_size`, on seeded random images created on
    the device. On a CPU each measurement stops after CPU_BUDGET_S of timed passes (at least MIN_TIMED):
    model_latency_ms_median, model_latency_ms_p90, model_img_per_s, timing_warmup, timing_iterations (timed at
    batch 1), timing_budget_s (CPU only)."""
    shape = _check_shape(image_shape)
    _check_int("batch_size", batch_size, 1)
    device = torch.device(device)
    budget = CPU_BUDGET_S if device.type == "cpu" else 0.0
    single = measure_latency(fn, _random_batch((1, *shape), device, seed), warmup=warmup, iterations=iterations,
                             device=device, budget_s=budget)
    batched = single if batch_size == 1 else measure_latency(
        fn, _random_batch((batch_size, *shape), device, seed), warmup=warmup, iterations=iterations, device=device,
        budget_s=budget)
    return {"model_latency_ms_median": single.median_ms, "model_latency_ms_p90": single.p90_ms,
            "model_img_per_s": batched.img_per_s, "timing_warmup": single.warmup, "timing_iterations": single.iterations,
            **({"timing_budget_s": budget} if budget else {})}


def pipeline_figures(test_images: int, test_seconds: float, batch_size: int) -> dict[str, float]:
    """Record keys test_images, test_seconds, pipeline_img_per_s (= images / seconds), pipeline_batch_size."""
    _check_int("test_images", test_images, 0)
    _check_int("batch_size", batch_size, 1)
    real = isinstance(test_seconds, numbers.Real) and not isinstance(test_seconds, bool)
    if not real or not math.isfinite(test_seconds) or test_seconds <= 0:
        raise ValueError(f"test_seconds must be a finite number > 0, got {test_seconds!r}")
    return {
        "test_images": int(test_images),
        "test_seconds": float(test_seconds),
        "pipeline_img_per_s": test_images / test_seconds,
        "pipeline_batch_size": int(batch_size),
    }


def peak_memory(device: torch.device | str | None) -> dict[str, float]:
    """Peak memory so far: reserved GPU memory on CUDA, else the process's peak RSS (MiB)."""
    device = _as_device(device)
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    import resource  # POSIX only, so imported here

    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bytes_per_unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return {"peak_rss_mb": maxrss * bytes_per_unit / 2**20}


# ---- GPU-grade protocol: precision × batch rows, the paper's host-to-host latency, size and FLOPs ----------

@dataclass(frozen=True)
class SpeedRow:
    """One timed configuration (a row of the record's `speed` list, docs/records.md)."""

    protocol: str  # "on-device": fixed input already on the device; "host-to-host": the paper's protocol
    precision: str  # "fp32" or "fp16" (torch.autocast)
    batch_size: int  # the batch actually timed
    requested_batch_size: int
    channels_last: bool
    warmup: int
    iterations: int
    latency_ms_median: float | None  # per pass (whole batch)
    latency_ms_p90: float | None
    img_per_s: float | None
    note: str = ""  # e.g. an out-of-memory retry


def _is_oom(exc: BaseException) -> bool:
    """True for a CUDA out-of-memory error (torch.cuda.OutOfMemoryError or its message)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    return (bool(oom_type) and isinstance(exc, oom_type)) or "out of memory" in str(exc).lower()


_HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def _autocast(device: torch.device, precision: str):
    """An autocast context for `fp16` / `bf16`, a no-op context for `fp32`."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision in _HALF:
        return torch.autocast(device_type=device.type, dtype=_HALF[precision])
    raise ValueError(f"precision must be 'fp32', 'fp16' or 'bf16', got {precision!r}")


def _on_device_row(fn: Callable[[torch.Tensor], Any], shape: tuple[int, int, int], device: torch.device,
                   precision: str, batch_size: int, requested: int, channels_last: bool, warmup: int,
                   iterations: int, note: str, budget_s: float = 0.0) -> SpeedRow:
    example = _random_batch((batch_size, *shape), device, 0)
    if channels_last:
        example = example.contiguous(memory_format=torch.channels_last)
    with _autocast(device, precision):
        res = measure_latency(fn, example, warmup=warmup, iterations=iterations, device=device, budget_s=budget_s)
    log.info("on-device %s batch %d: %.4g ms per pass (%d timed)", precision, batch_size, res.median_ms, res.iterations)
    return SpeedRow("on-device", precision, batch_size, requested, channels_last, res.warmup, res.iterations,
                    res.median_ms, res.p90_ms, res.img_per_s, note)


def on_device_rows(fn: Callable[[torch.Tensor], Any], image_shape: tuple[int, int, int], device: torch.device | str, *,
               batch_sizes: list[int], precisions: list[str], warmup: int = 100, iterations: int = 200,
               channels_last: bool = False, budget_s: float = 0.0) -> list[SpeedRow]:
    """Time fn at each precision × batch size on a fixed on-device input.

    On out-of-memory the batch is halved until it fits (the row keeps the requested size and says
    so); a batch of 1 that does not fit gives a row with empty figures and the note.
    """
    shape, device = _check_shape(image_shape), torch.device(device)
    _check_int("warmup", warmup, 0)
    _check_int("iterations", iterations, 1)
    rows = []
    for precision in precisions:
        for requested in batch_sizes:
            _check_int("batch_size", requested, 1)
            rows.append(_fit_batch(fn, shape, device, precision, requested, channels_last, warmup, iterations, budget_s))
    return rows


def _fit_batch(fn, shape, device, precision, requested, channels_last, warmup, iterations, budget_s) -> SpeedRow:
    """One row, halving the batch on out-of-memory."""
    batch, notes = requested, []
    while True:
        try:
            return _on_device_row(fn, shape, device, precision, batch, requested, channels_last, warmup, iterations,
                                  "; ".join(notes), budget_s)
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise
            notes.append(f"out of memory at batch {batch}")
            log.warning("timing %s: out of memory at batch %d", precision, batch)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if batch == 1:
                return SpeedRow("on-device", precision, batch, requested, channels_last, warmup, iterations,
                                None, None, None, "; ".join(notes))
            batch //= 2
            notes.append(f"retried at batch {batch}")


def host_to_host_latency(fn: Callable[[torch.Tensor], torch.Tensor], image_shape: tuple[int, int, int],
                         device: torch.device | str, *, precision: str = "fp32", warmup: int = 100,
                         iterations: int = 200, budget_s: float = 0.0) -> SpeedRow:
    """The paper's protocol at batch 1: timer from the host-to-device copy of the image to the anomaly map on the host.

    fn must return the anomaly map (a tensor); its `.cpu()` copy ends each timed pass.
    """
    shape, device = _check_shape(image_shape), torch.device(device)
    host = _random_batch((1, *shape), torch.device("cpu"), 0)
    with torch.inference_mode(), _autocast(device, precision):
        res = time_calls(lambda: fn(host.to(device)).cpu(), 1, device, warmup=warmup, iterations=iterations,
                         budget_s=budget_s)
    log.info("host-to-host %s batch 1: %.4g ms (%d timed)", precision, res.median_ms, res.iterations)
    return SpeedRow("host-to-host", precision, 1, 1, False, res.warmup, res.iterations, res.median_ms, res.p90_ms,
                    res.img_per_s)


def parameter_count(module: torch.nn.Module) -> int:
    """Number of parameters (trainable or not) of a module."""
    return sum(p.numel() for p in module.parameters())


def flops_per_image(fn: Callable[[torch.Tensor], Any], image_shape: tuple[int, int, int],
                    device: torch.device | str = "cpu") -> int:
    """FLOPs of one forward pass at batch 1, counted by torch.utils.flop_counter (a multiply-add = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = _check_shape(image_shape)
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        fn(_random_batch((1, *shape), torch.device(device), 0))
    return int(counter.get_total_flops())


# ---- memory per phase and the harness's share of the pipeline ---------------------------------------

def reset_peak_memory(device: torch.device | str | None) -> None:
    """Start a new peak: CUDA's peak statistics, or on Linux the process's peak resident set (VmHWM)."""
    device = _as_device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:  # "5" resets VmHWM to the current RSS (Linux)
            fh.write("5")
    except OSError:
        pass


def peak_memory_since_reset(device: torch.device | str | None) -> float | None:
    """MiB at peak since reset_peak_memory: reserved CUDA memory, or VmHWM on Linux; None where unknown."""
    device = _as_device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def harness_ms_per_image(pass_seconds: float, model_seconds: float, images: int) -> float | None:
    """The harness's share of an evaluation pass, in ms per image: the pass's wall time minus the time its own
    (synchronised) forward passes took, over the images scored; None for no image."""
    if images <= 0:
        return None
    return (pass_seconds - model_seconds) / images * 1e3
