"""`vadbench speed` on the CPU, GPU speed rows in the report compared like with like, and a GPU torch cannot use."""
from __future__ import annotations

import json
import logging
import math
import subprocess
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch

from vadbench.cli import main as cli_main
from vadbench.config import SpeedSpec
from vadbench.errors import ConfigError, DeviceError
from vadbench.records import records_frame
from vadbench.report.speed import speed_summary, with_published
from vadbench.report.tables import reference_table
from vadbench.run import environment
from vadbench.run.speed import CPU_DEFAULTS, speed_settings

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "params/references/published.yaml"


def test_speed_command_times_every_model_of_the_demo_on_random_input(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the demo's params; no dataset, teacher or anomaly source is read
    out = tmp_path / "speed.json"
    assert cli_main(["speed", "params/experiments/demo.yaml", "--device", "cpu", "--warmup", "0", "--iterations", "2",
                     "--batch-sizes", "1,2", "--precisions", "fp32", "--out", str(out)]) == 0
    rows = pd.DataFrame(json.loads(out.read_text()))
    assert sorted(rows["model"].unique()) == ["draem", "efficientad_s", "padim", "patchcore"]
    for _, model in rows.groupby("model"):
        assert sorted(zip(model["protocol"], model["batch_size"])) == [("host-to-host", 1), ("on-device", 1),
                                                                       ("on-device", 2)]
        assert (model["latency_ms_median"] > 0).all() and (model["model_params"] > 0).all()
        assert ((model["img_per_s"] - model["batch_size"] / (model["latency_ms_median"] / 1000)).abs() < 1e-6).all()
    assert (rows["device"] == "cpu").all() and rows["published_latency_ms"].isna().all()  # no fp16 rows: nothing beside


def test_speed_command_times_efficientad_training_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "speed.csv"
    assert cli_main(["speed", "params/experiments/gpu_check.yaml", "--model", "efficientad_s", "--device", "cpu",
                     "--warmup", "1", "--iterations", "2", "--batch-sizes", "1", "--precisions", "fp32",
                     "--train-steps", "2", "--out", str(out)]) == 0
    rows = pd.read_csv(out).set_index("protocol")
    train, infer = rows.loc["training"], rows.loc["on-device"]
    assert (train["batch_size"], train["iterations"], train["precision"]) == (1, 2, "fp32")
    assert train["latency_ms_median"] > infer["latency_ms_median"]  # forward of student + autoencoder, backward, step
    hours = 70000 * train["latency_ms_median"] / 3.6e6
    assert train["note"] == f"70000 steps (max_steps) at this rate: {hours:.3g} h"
    assert "training" in capsys.readouterr().out


def test_speed_command_names_bad_flags(capsys):
    assert cli_main(["speed", "params/experiments/demo.yaml", "--precisions", "fp8"]) == 2
    assert "--precisions 'fp8': use fp32, fp16" in capsys.readouterr().err


def test_protocol_is_sized_by_the_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert speed_settings(gpu) == SpeedSpec("always")  # GPU defaults unchanged: 100 + 200 passes, fp32 and fp16
    assert speed_settings(cpu) == CPU_DEFAULTS and CPU_DEFAULTS.precisions == ["fp32"] and CPU_DEFAULTS.budget_s > 0
    assert speed_settings(cpu, iterations=7, precisions=["fp32", "bf16"]).iterations == 7
    with pytest.raises(ConfigError, match="fp16 on a CPU: torch emulates it there, slower than fp32.*--precisions fp32,bf16"):
        speed_settings(cpu, precisions=["fp32", "fp16"])


def test_cpu_speed_command_uses_its_budget_and_bf16(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "speed.csv"
    caplog.set_level(logging.INFO)
    assert cli_main(["speed", "params/experiments/demo.yaml", "--model", "padim", "--device", "cpu",
                     "--precisions", "fp32,bf16", "--batch-sizes", "2", "--iterations", "50", "--budget-s", "0.001",
                     "--out", str(out)]) == 0
    rows = pd.read_csv(out)
    assert sorted(zip(rows["protocol"], rows["precision"])) == [("host-to-host", "bf16"), ("host-to-host", "fp32"),
                                                                ("on-device", "bf16"), ("on-device", "fp32")]
    assert (rows["iterations"] == 3).all() and (rows["warmup"] == 1).all()  # the budget spent at once, both times
    progress = [r.getMessage() for r in caplog.records if "timed)" in r.getMessage()]
    assert len(progress) == 4  # a line per measurement


def cuda_record(model: str, kind: str, size: str, rows: list[dict], device: str = "cuda") -> dict:
    return {"status": "ok", "experiment": "e", "model": model, "dataset": "mv", "dataset_kind": "mvtec_ad",
            "category": "bottle", "seed": 0, "config": {"model": {"kind": kind}, "model_params": {"model_size": size}},
            "metrics": {"image_auroc": 0.9}, "timing": {"model_latency_ms_median": 99.0, "model_img_per_s": 11.0},
            "environment": {"device": device, "device_name": "NVIDIA T4" if device == "cuda" else "some CPU"},
            "speed": rows}


def row(protocol: str, precision: str, batch: int, ms: float) -> dict:
    return {"protocol": protocol, "precision": precision, "batch_size": batch, "requested_batch_size": batch,
            "channels_last": False, "latency_ms_median": ms, "latency_ms_p90": ms, "img_per_s": batch / ms * 1e3,
            "note": ""}


CUDA_ROWS = [row("on-device", "fp32", 1, 4.0), row("on-device", "fp16", 1, 2.5), row("on-device", "fp16", 16, 32.0),
             row("host-to-host", "fp16", 1, 3.0), row("on-device", "fp32", 16, 64.0)]


def test_references_compare_like_with_like():
    frame = records_frame([cuda_record("eff", "efficientad", "small", CUDA_ROWS),
                           cuda_record("cpu_eff", "efficientad", "small", [], device="cpu")])
    refs = reference_table(frame, [PUBLISHED])
    refs = refs.loc[refs["category"] == "(mean)"].set_index(["model", "external"])
    ours = refs.loc[("eff", False)]
    assert (ours["model_latency_ms_median"], ours["model_img_per_s"]) == (3.0, 500.0)  # fp16: bs 1 host-to-host; bs 16
    assert "fp16, latency at batch 1, throughput at batch 16, on NVIDIA T4" in ours["note"]
    paper = refs.loc[("eff", True)].dropna(subset=["model_latency_ms_median"])  # the paper's speed row
    assert paper[["model_latency_ms_median", "model_img_per_s"]].values.tolist() == [[2.2, 614.0]]
    cpu = refs.loc[("cpu_eff", False)]  # the record's own CPU timing (99 ms) is never set beside a GPU figure
    assert math.isnan(cpu["model_latency_ms_median"]) and "CPU runs only" in cpu["note"]


def test_speed_summary_is_the_median_over_runs():
    records = [cuda_record("eff", "efficientad", "small", [row("on-device", "fp16", 1, ms)]) for ms in (1.0, 2.0, 9.0)]
    for i, record in enumerate(records):
        record["category"] = f"c{i}"
    summary = speed_summary(records_frame(records))
    assert summary[["n_runs", "latency_ms_median", "device_name"]].values.tolist() == [[3, 2.0, "NVIDIA T4"]]


def test_published_beside_speed_rows_only_like_with_like():
    table = pd.DataFrame([{"model": "e", "model_kind": "efficientad", "model_size": "small", **r} for r in CUDA_ROWS])
    shown = with_published(table, [PUBLISHED])
    beside = shown.dropna(subset=["published_latency_ms"])
    assert sorted(zip(beside["protocol"], beside["batch_size"])) == [("host-to-host", 1), ("on-device", 1)]
    assert (beside["precision"] == "fp16").all() and (beside["published_latency_ms"] == 2.2).all()
    [throughput] = shown["published_img_per_s"].dropna().tolist()
    assert throughput == 614.0


def smi(gpus: str, header: str):
    def run(command, **kwargs):
        return subprocess.CompletedProcess(command, 0, stdout=gpus if "-L" in command else header, stderr="")
    return run


def test_a_gpu_torch_cannot_use_is_named_with_the_fix():
    header = "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |\n"
    gpus = "GPU 0: Tesla P100-PCIE-16GB (UUID: GPU-1234)\n"
    with mock.patch.object(torch.cuda, "is_available", return_value=False), \
            mock.patch.object(environment.subprocess, "run", smi(gpus, header)):
        for requested in ("auto", "cuda"):
            with pytest.raises(DeviceError) as err:
                environment.resolve_device(requested)
            message = str(err.value)
            assert "nvidia-smi sees GPU 0: Tesla P100-PCIE-16GB" in message and "CUDA up to 12.2" in message
            assert "download.pytorch.org/whl/cu122" in message and "set device: cpu" in message
        assert environment.resolve_device("cpu") == torch.device("cpu")  # on purpose, still allowed


def test_without_an_nvidia_gpu_auto_is_the_cpu_and_cuda_an_error():
    with mock.patch.object(torch.cuda, "is_available", return_value=False), \
            mock.patch.object(environment.subprocess, "run", side_effect=FileNotFoundError("nvidia-smi")):
        assert environment.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(DeviceError, match="no NVIDIA GPU here"):
            environment.resolve_device("cuda")


def test_gpu_check_without_a_gpu_is_one_line_naming_the_fix(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    with mock.patch.object(torch.cuda, "is_available", return_value=False), \
            mock.patch.object(environment.subprocess, "run", side_effect=FileNotFoundError("nvidia-smi")):
        assert cli_main(["speed", "params/experiments/gpu_check.yaml", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vadbench: error: params ask for device 'cuda' but there is no NVIDIA GPU here")
