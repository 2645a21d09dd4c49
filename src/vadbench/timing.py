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
from dataclasses import dataclass
from typing import Any, Callable

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
) -> LatencyResult:
    """Time fn on a fixed input already on the device.

    `warmup` untimed passes, then `iterations` passes each timed on its own with a synchronise
    before and after (perf_counter), all under torch.inference_mode(). example's first dimension
    is the batch size; device defaults to example.device. Putting a model in eval mode is the
    caller's job.
    """
    _check_int("warmup", warmup, 0)
    _check_int("iterations", iterations, 1)
    if not isinstance(example, torch.Tensor) or example.dim() < 1:
        raise ValueError("example must be a tensor with a batch dimension")
    device = example.device if device is None else torch.device(device)
    if example.device.type != device.type:
        log.warning("example is on %s but timing synchronises %s", example.device, device)
    batch_size = int(example.shape[0])
    seconds: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            fn(example)
        for _ in range(iterations):
            synchronize(device)
            start = _clock()
            fn(example)
            synchronize(device)
            seconds.append(_clock() - start)
    result = _summarise(seconds, batch_size, warmup)
    log.debug("latency on %s: %s", device, result)
    return result


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


def time_model(
    fn: Callable[[torch.Tensor], Any],
    image_shape: tuple[int, int, int],
    *,
    batch_size: int,
    device: torch.device | str,
    warmup: int,
    iterations: int,
    seed: int = 0,
) -> dict[str, float]:
    """Model figures for a record: latency at batch 1, throughput at `batch_size`.

    Inputs are seeded random images created on the device. Returns model_latency_ms_median,
    model_latency_ms_p90, model_img_per_s, timing_warmup, timing_iterations.
    """
    shape = _check_shape(image_shape)
    _check_int("batch_size", batch_size, 1)
    _check_int("warmup", warmup, 0)
    _check_int("iterations", iterations, 1)
    device = torch.device(device)
    single = measure_latency(fn, _random_batch((1, *shape), device, seed),
                             warmup=warmup, iterations=iterations, device=device)
    if batch_size == 1:
        batched = single
    else:
        batched = measure_latency(fn, _random_batch((batch_size, *shape), device, seed),
                                  warmup=warmup, iterations=iterations, device=device)
    return {
        "model_latency_ms_median": single.median_ms,
        "model_latency_ms_p90": single.p90_ms,
        "model_img_per_s": batched.img_per_s,
        "timing_warmup": int(warmup),
        "timing_iterations": int(iterations),
    }


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
