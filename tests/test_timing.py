"""Tests for vadbench.run.timing: real sleeps and a real conv net on CPU, mocked CUDA synchronise."""
from __future__ import annotations

import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from vadbench.run import timing
from vadbench.run.timing import (
    LatencyResult,
    Stopwatch,
    latency_figures,
    measure_latency,
    peak_memory,
    pipeline_figures,
    synchronize,
)

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


class SlowStart:
    """Sleeps `slow_s` on its first `slow_calls` calls and `fast_s` afterwards; counts calls."""

    def __init__(self, slow_calls: int, slow_s: float = 0.050, fast_s: float = 0.002) -> None:
        self.slow_calls, self.slow_s, self.fast_s = slow_calls, slow_s, fast_s
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.slow_s if self.calls <= self.slow_calls else self.fast_s)
        return x


def fake_clock(durations_s: list[float]):
    """A clock whose consecutive (start, stop) readings are `durations_s` apart."""
    readings, now = [], 100.0
    for d in durations_s:
        readings += [now, now + d]
        now += d + 1.0
    return iter(readings).__next__


# --- measure_latency -------------------------------------------------------------------------


def test_warmup_passes_are_excluded_from_timing():
    fn = SlowStart(slow_calls=5)
    res = measure_latency(fn, torch.zeros(1, 3, 4, 4), warmup=5, iterations=7)
    assert fn.calls == 5 + 7
    assert 1.9 <= res.median_ms < 15.0, res  # 2 ms sleeps, not the 50 ms warm-up ones
    assert res.p90_ms < 30.0, res  # no 50 ms warm-up pass slipped into the timed set
    assert (res.warmup, res.iterations) == (5, 7)


def test_without_warmup_slow_first_passes_are_timed():
    fn = SlowStart(slow_calls=5)
    res = measure_latency(fn, torch.zeros(1, 3), warmup=0, iterations=7)
    assert fn.calls == 7
    assert res.median_ms >= 49.0  # 5 of 7 timed passes sleep 50 ms


def test_sleep_median_within_tolerance():
    res = measure_latency(lambda x: time.sleep(0.010), torch.zeros(4, 3), warmup=1, iterations=9)
    assert 9.9 <= res.median_ms <= 20.0, res
    assert res.p90_ms >= res.median_ms
    assert res.mean_ms >= 9.9
    assert res.batch_size == 4


def test_img_per_s_is_batch_over_median_seconds():
    res = measure_latency(lambda x: time.sleep(0.003), torch.zeros(8, 2), warmup=0, iterations=5)
    assert res.img_per_s == pytest.approx(8 / (res.median_ms / 1000.0))


def test_statistics_exact_with_fake_clock(monkeypatch):
    durations = [d / 1000.0 for d in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    monkeypatch.setattr(timing, "_clock", fake_clock(durations))
    res = measure_latency(lambda x: x, torch.zeros(2, 1), warmup=3, iterations=10)
    assert res == LatencyResult(batch_size=2, warmup=3, iterations=10,
                                median_ms=pytest.approx(5.5), p90_ms=pytest.approx(9.1),
                                mean_ms=pytest.approx(5.5), img_per_s=pytest.approx(2 / 0.0055))


def test_time_budget_stops_the_timed_passes_early_but_keeps_three(monkeypatch):
    monkeypatch.setattr(timing, "_clock", fake_clock([1.0] * 10))
    calls = []
    res = measure_latency(lambda x: calls.append(1), torch.zeros(1), warmup=2, iterations=10, budget_s=1.5)
    assert (res.iterations, len(calls)) == (timing.MIN_TIMED, 2 + timing.MIN_TIMED)  # 2 s passed the budget at 2 ...
    monkeypatch.setattr(timing, "_clock", fake_clock([1.0] * 10))
    assert measure_latency(lambda x: x, torch.zeros(1), warmup=0, iterations=10, budget_s=4.5).iterations == 5
    monkeypatch.setattr(timing, "_clock", fake_clock([1.0] * 10))
    assert measure_latency(lambda x: x, torch.zeros(1), warmup=0, iterations=10).iterations == 10  # no budget


def test_single_iteration(monkeypatch):
    monkeypatch.setattr(timing, "_clock", fake_clock([0.004]))
    res = measure_latency(lambda x: x, torch.zeros(1), warmup=0, iterations=1)
    assert res.median_ms == pytest.approx(4.0) and res.p90_ms == pytest.approx(4.0)
    assert res.img_per_s == pytest.approx(250.0)


def test_runs_under_inference_mode():
    seen = []
    measure_latency(lambda x: seen.append(torch.is_inference_mode_enabled()), torch.zeros(1), warmup=2,
                    iterations=3)
    assert seen == [True] * 5


def test_synchronize_brackets_each_timed_pass_on_cuda():
    events: list[str] = []

    def fn(x):
        events.append("fn")

    with mock.patch.object(torch.cuda, "synchronize", side_effect=lambda d=None: events.append("sync")) as sync:
        measure_latency(fn, torch.zeros(1), warmup=2, iterations=4, device=CUDA)
    assert sync.call_count == 2 * 4
    assert all(call.args[0].type == "cuda" for call in sync.call_args_list)
    assert events == ["fn"] * 2 + ["sync", "fn", "sync"] * 4


def test_no_synchronize_on_cpu():
    with mock.patch.object(torch.cuda, "synchronize") as sync:
        measure_latency(lambda x: x, torch.zeros(1), warmup=1, iterations=3)
        measure_latency(lambda x: x, torch.zeros(1), warmup=1, iterations=3, device=CPU)
        synchronize(CPU)
        with Stopwatch(CPU):
            pass
    sync.assert_not_called()


def test_synchronize_calls_cuda_synchronize_with_device():
    with mock.patch.object(torch.cuda, "synchronize") as sync:
        synchronize(torch.device("cuda:1"))
    sync.assert_called_once_with(torch.device("cuda:1"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"iterations": 0}, "iterations"), ({"iterations": 2.5}, "iterations"), ({"warmup": -1}, "warmup")],
)
def test_measure_latency_rejects_bad_counts(kwargs, name):
    fn = SlowStart(slow_calls=0, fast_s=0.0)
    with pytest.raises(ValueError, match=name):
        measure_latency(fn, torch.zeros(1), **kwargs)
    assert fn.calls == 0


def test_measure_latency_rejects_non_batched_example():
    with pytest.raises(ValueError, match="example"):
        measure_latency(lambda x: x, torch.tensor(1.0))


# --- Stopwatch -------------------------------------------------------------------------------


def test_stopwatch_measures_block():
    with Stopwatch(CPU) as sw:
        time.sleep(0.020)
    assert sw.seconds >= 0.0195  # never less than the block took; how much more depends on the machine's load


@pytest.mark.perf
def test_stopwatch_adds_little_on_an_idle_machine():
    with Stopwatch(CPU) as sw:
        time.sleep(0.020)
    assert sw.seconds < 0.03


def test_stopwatch_synchronises_on_enter_and_exit_on_cuda():
    with mock.patch.object(torch.cuda, "synchronize") as sync:
        with Stopwatch(CUDA) as sw:
            assert sync.call_count == 1
        assert sync.call_count == 2
    assert sw.seconds >= 0.0


# --- latency_figures ------------------------------------------------------------------------------

MODEL_KEYS = {"model_latency_ms_median", "model_latency_ms_p90", "model_img_per_s", "timing_warmup",
              "timing_iterations"}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1)).eval()


def test_latency_figures_real_conv_net_on_cpu():
    net = tiny_net()
    shapes = []

    def fn(x):
        shapes.append(tuple(x.shape))
        return net(x)

    out = latency_figures(fn, (3, 32, 32), batch_size=4, device=CPU, warmup=2, iterations=5)
    assert set(out) == MODEL_KEYS | {"timing_budget_s"} and out["timing_budget_s"] == timing.CPU_BUDGET_S
    assert 0 < out["model_latency_ms_median"] <= out["model_latency_ms_p90"] < 5000
    assert 0 < out["model_img_per_s"] < 1e7
    assert (out["timing_warmup"], out["timing_iterations"]) == (2, 5)  # a tiny net: 5 passes within the budget
    assert shapes == [(1, 3, 32, 32)] * 7 + [(4, 3, 32, 32)] * 7  # latency at 1, throughput at 4


def test_latency_figures_on_a_cpu_stop_at_their_budget(monkeypatch):
    monkeypatch.setattr(timing, "_clock", fake_clock([0.6] * 40))  # every pass 0.6 s: 2 fill the 1 s budget
    out = latency_figures(lambda x: x, (3, 4, 4), batch_size=2, device=CPU, warmup=0, iterations=20)
    assert out["timing_iterations"] == timing.MIN_TIMED and out["timing_budget_s"] == timing.CPU_BUDGET_S


def test_latency_figures_input_is_seeded_and_on_device():
    seen = []
    fn = lambda x: seen.append(x.clone())  # noqa: E731
    latency_figures(fn, (3, 8, 8), batch_size=1, device=CPU, warmup=0, iterations=1)
    latency_figures(fn, (3, 8, 8), batch_size=1, device="cpu", warmup=0, iterations=1)
    assert len(seen) == 2  # batch 1: one measurement serves both figures
    assert seen[0].device.type == "cpu"
    assert torch.equal(seen[0], seen[1]) and seen[0].std() > 0


def test_latency_figures_synchronises_cuda_device():
    def batch_on_host(shape, device, seed):
        assert device.type == "cuda"
        return torch.zeros(shape)

    with mock.patch.object(timing, "_random_batch", side_effect=batch_on_host), \
            mock.patch.object(torch.cuda, "synchronize") as sync:
        out = latency_figures(lambda x: x, (3, 4, 4), batch_size=2, device=CUDA, warmup=1, iterations=3)
    assert sync.call_count == 2 * 3 * 2  # two measurements, sync before and after each timed pass
    assert out["timing_iterations"] == 3


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"iterations": 0}, "iterations"),
        ({"warmup": -2}, "warmup"),
        ({"image_shape": (32, 32)}, "image_shape"),
        ({"image_shape": (3, 0, 32)}, "image_shape"),
    ],
)
def test_latency_figures_rejects_bad_arguments(kwargs, name):
    args = {"image_shape": (3, 8, 8), "batch_size": 2, "device": CPU, "warmup": 1, "iterations": 2} | kwargs
    fn = mock.Mock()
    with pytest.raises(ValueError, match=name):
        latency_figures(fn, args.pop("image_shape"), **args)
    fn.assert_not_called()


# --- pipeline_figures ------------------------------------------------------------------------


def test_pipeline_figures_arithmetic():
    out = pipeline_figures(test_images=150, test_seconds=6.0, batch_size=32)
    assert out == {"test_images": 150, "test_seconds": 6.0, "pipeline_img_per_s": 25.0, "pipeline_batch_size": 32}
    assert pipeline_figures(0, 1.5, 1)["pipeline_img_per_s"] == 0.0


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((10, 0.0, 4), "test_seconds"),
        ((10, -1.0, 4), "test_seconds"),
        ((10, float("nan"), 4), "test_seconds"),
        ((10, float("inf"), 4), "test_seconds"),
        ((-1, 1.0, 4), "test_images"),
        ((10, 1.0, 0), "batch_size"),
    ],
)
def test_pipeline_figures_rejects_bad_arguments(args, name):
    with pytest.raises(ValueError, match=name):
        pipeline_figures(*args)


# --- peak_memory -----------------------------------------------------------------------------


def test_peak_memory_cpu_is_rss():
    before = peak_memory(CPU)["peak_rss_mb"]
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    after = peak_memory("cpu")
    del block
    assert set(after) == {"peak_rss_mb"}
    assert 10 < before <= after["peak_rss_mb"] < 1e6
    assert after["peak_rss_mb"] >= 64


def test_peak_memory_cuda_is_reserved_mib():
    with mock.patch.object(torch.cuda, "max_memory_reserved", return_value=3 * 2**20) as reserved:
        out = peak_memory(CUDA)
    assert out == {"peak_gpu_mem_mb": 3.0}
    reserved.assert_called_once_with(CUDA)


def test_harness_is_the_pass_minus_its_forward_passes_per_image():
    assert timing.harness_ms_per_image(2.0, 0.5, 100) == pytest.approx(15.0)  # 20 ms per image, 5 in the model
    assert timing.harness_ms_per_image(1.0, 0.0, 0) is None


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset is Linux-only")
def test_peak_memory_per_phase_on_the_cpu():
    import numpy as np

    timing.reset_peak_memory("cpu")
    before = timing.peak_memory_since_reset("cpu")
    block = np.ones(200 * 2**20 // 8)  # 200 MiB touched
    during = timing.peak_memory_since_reset("cpu")
    del block
    timing.reset_peak_memory("cpu")
    after = timing.peak_memory_since_reset("cpu")
    assert during - before >= 190 and after < during - 150  # the reset forgets the earlier phase's peak
