"""GPU-grade timing on CPU: the CUDA calls are mocked, the arithmetic and the protocol are real."""
from __future__ import annotations

import json
import subprocess
import time
from unittest import mock

import pytest
import torch
from torch import nn

from vadbench import records
from vadbench.config import SpeedSpec, expand_runs, load_experiment
from vadbench.launch import execute
from vadbench.run import environment, evaluate, timing

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


class TinyNet(nn.Module):
    """conv 3->4 (3x3, pad 1, bias) then global mean and linear 4->2: FLOPs countable by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_parameter_count_and_flops_by_hand():
    net = TinyNet()
    assert timing.parameter_count(net) == (3 * 4 * 9 + 4) + (4 * 2 + 2) == 122
    # conv: 2 FLOPs per multiply-add, 8*8 outputs x 4 channels x (3*9) taps; linear: 2 * 4 * 2 (bias not counted)
    assert timing.flops_per_image(net, (3, 8, 8)) == 2 * 8 * 8 * 4 * 27 + 2 * 4 * 2 == 13840
    assert timing.flops_per_image(net, (3, 16, 16)) == 2 * 16 * 16 * 4 * 27 + 16  # per image, not per batch


def test_on_device_rows_precisions_batches_and_synchronise_per_pass():
    calls = []
    net = TinyNet().eval()

    def fn(x):
        calls.append((x.shape[0], torch.is_autocast_enabled("cpu")))
        return net(x)

    with mock.patch.object(timing, "synchronize", wraps=timing.synchronize) as sync:
        rows = timing.on_device_rows(fn, (3, 8, 8), CPU, batch_sizes=[1, 4], precisions=["fp32", "fp16"],
                                 warmup=3, iterations=5, channels_last=True)
    assert [(r.precision, r.batch_size, r.protocol) for r in rows] == [
        ("fp32", 1, "on-device"), ("fp32", 4, "on-device"), ("fp16", 1, "on-device"), ("fp16", 4, "on-device")]
    assert sync.call_count == 4 * 2 * 5  # before and after each timed pass, never around warm-up passes
    assert len(calls) == 4 * (3 + 5)
    assert [c[1] for c in calls[:16]] == [False] * 16 and all(c[1] for c in calls[16:])  # fp16 rows under autocast
    for r in rows:
        assert r.img_per_s == pytest.approx(r.batch_size / (r.latency_ms_median / 1e3))
        assert r.channels_last and r.requested_batch_size == r.batch_size and r.note == ""


def test_cuda_path_synchronises_the_cuda_device():
    """On 'cuda' each timed pass is bracketed by torch.cuda.synchronize (inputs kept on CPU by the mock)."""
    on_cpu = lambda shape, device, seed: torch.zeros(shape)  # noqa: E731
    with mock.patch.object(timing, "_random_batch", side_effect=on_cpu), \
            mock.patch.object(torch.cuda, "synchronize") as cuda_sync, \
            mock.patch.object(torch, "autocast") as autocast:
        rows = timing.on_device_rows(lambda x: x, (3, 4, 4), "cuda", batch_sizes=[16], precisions=["fp16"],
                                 warmup=100, iterations=7)
    assert cuda_sync.call_count == 2 * 7 and all(c.args == (CUDA,) for c in cuda_sync.call_args_list)
    autocast.assert_called_once_with(device_type="cuda", dtype=torch.float16)
    assert rows[0].warmup == 100 and rows[0].batch_size == 16


def test_out_of_memory_halves_the_batch_and_says_so():
    oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)

    def fn(x):
        if x.shape[0] > 4:
            raise oom("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x

    with mock.patch.object(torch.cuda, "empty_cache"):
        [row] = timing.on_device_rows(fn, (3, 4, 4), CPU, batch_sizes=[16], precisions=["fp32"], warmup=1, iterations=2)
    assert (row.requested_batch_size, row.batch_size) == (16, 4)
    assert row.note == "out of memory at batch 16; retried at batch 8; out of memory at batch 8; retried at batch 4"
    assert row.latency_ms_median is not None

    def never(x):
        raise oom("CUDA out of memory")

    [row] = timing.on_device_rows(never, (3, 4, 4), CPU, batch_sizes=[2], precisions=["fp32"], warmup=0, iterations=1)
    assert row.batch_size == 1 and row.latency_ms_median is None and row.img_per_s is None
    assert row.note.endswith("out of memory at batch 1")
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other errors are not swallowed
        timing.on_device_rows(lambda x: (_ for _ in ()).throw(RuntimeError("shape mismatch")), (3, 4, 4), CPU,
                          batch_sizes=[1], precisions=["fp32"], warmup=0, iterations=1)


def test_host_to_host_latency_times_copy_forward_and_copy_back():
    seen = []

    class SlowCopyMap:
        """An anomaly map whose copy to the host takes 4 ms."""

        def cpu(self):
            time.sleep(0.004)
            return torch.zeros(1, 1, 4, 4)

    def fn(x):
        seen.append((x.device.type, tuple(x.shape)))
        time.sleep(0.004)
        return SlowCopyMap()

    row = timing.host_to_host_latency(fn, (3, 4, 4), CPU, warmup=2, iterations=5)
    assert row.protocol == "host-to-host" and row.batch_size == 1 and (row.warmup, row.iterations) == (2, 5)
    assert seen == [("cpu", (1, 3, 4, 4))] * 7
    assert row.latency_ms_median >= 8.0  # forward (4 ms) and the copy of the map back to the host (4 ms)


def test_speed_section_runs_on_cuda_or_when_asked(tmp_path):
    class MapNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            return mock.Mock(anomaly_map=self.conv(x))

    (tmp_path / "e.yaml").write_text(
        "name: e\ndatasets: [{name: d, kind: demo, root: r, categories: [a]}]\n"
        "models: [{name: m, kind: draem, image_size: 32, train: {max_steps: 1}}]\n"
        "speed: {enabled: always, warmup: 1, iterations: 2, batch_sizes: [1, 2], precisions: [fp32]}\n")
    run = expand_runs(load_experiment(tmp_path / "e.yaml"))[0]
    figures, rows = evaluate.speed_section(run, MapNet().eval(), (3, 8, 8), CPU)
    assert figures == {"model_params": 4, "model_flops_per_image": 2 * 8 * 8 * 3}
    assert [(r["protocol"], r["batch_size"]) for r in rows] == [("on-device", 1), ("on-device", 2), ("host-to-host", 1)]
    assert run.config()["speed"]["warmup"] == 1
    auto = expand_runs(load_experiment(tmp_path / "e.yaml"))[0]
    auto = type(auto)(**{**auto.__dict__, "speed": SpeedSpec()})
    assert evaluate.speed_section(auto, MapNet().eval(), (3, 8, 8), CPU)[1] == []  # auto: CPU runs skip the rows
    assert "speed" not in auto.config()  # defaults stay out of the config, so older config hashes hold
    assert json.loads(records.flatten({"speed": rows, "status": "ok"})["speed"]) == rows  # one JSON column


def test_training_oom_names_the_batch_size_in_the_failed_record(tmp_path):
    oom = getattr(torch.cuda, "OutOfMemoryError", RuntimeError)
    with pytest.raises(evaluate.OutOfMemoryAtBatch, match="CUDA out of memory in training at batch size 8"):
        with evaluate.out_of_memory_names("training", 8):
            raise oom("CUDA out of memory. Tried to allocate 1 GiB")
    with pytest.raises(ValueError):
        with evaluate.out_of_memory_names("training", 8):
            raise ValueError("unrelated")
    (tmp_path / "e.yaml").write_text("name: e\ndatasets: [{name: d, kind: demo, root: r, categories: [a]}]\n"
                                     "models: [{name: m, kind: draem, train: {max_steps: 1, batch_size: 8}}]\n")
    run = expand_runs(load_experiment(tmp_path / "e.yaml"))[0]

    def fit_out_of_memory(run, started, stage):
        stage("training")
        with evaluate.out_of_memory_names("training", 8):
            raise oom("CUDA out of memory. Tried to allocate 1 GiB")

    with mock.patch.object(evaluate, "_train_and_evaluate", fit_out_of_memory), \
            pytest.raises(evaluate.OutOfMemoryAtBatch):
        evaluate.train_and_evaluate(run, tmp_path / "run")
    record = records.read_record(tmp_path / "run")  # written by the run itself: the stage is data, not parsed
    assert (record["status"], record["failed_stage"], record["oom_stage"], record["oom_batch_size"]) == \
        ("failed", "training", "training", 8)
    assert record["config_hash"] == run.config_hash and record["error"].startswith("OutOfMemoryAtBatch: ")
    runner_started = "2000-01-01T00:00:00+00:00"  # the runner's own note of the failure keeps the run's record
    execute.write_failed_record(run, tmp_path / "run", "OutOfMemoryAtBatch: ...", runner_started)
    assert records.read_record(tmp_path / "run")["failed_stage"] == "training"


def test_gpu_environment_fields_mocked():
    done = subprocess.CompletedProcess([], 0, stdout="550.54.15\n", stderr="")
    with mock.patch.object(torch.cuda, "get_device_name", return_value="NVIDIA H200"), \
            mock.patch.object(torch.backends.cudnn, "version", return_value=90100), \
            mock.patch.object(environment.subprocess, "run", return_value=done):
        info = environment.environment_info(CUDA)
    assert (info["device"], info["device_name"], info["cuda_driver_version"], info["cudnn_version"]) == \
        ("cuda", "NVIDIA H200", "550.54.15", 90100)
    assert "cuda_version" in info
    with mock.patch.object(environment.subprocess, "run", side_effect=FileNotFoundError("nvidia-smi")):
        assert environment.cuda_driver_version() == "unknown"
