"""Launchers: worker pinning, Slurm parameters, and real batches through --workers 2 and submitit-local.

The fast tests use a stand-in train_evaluate notebook (as test_runner.py does) that records the
environment its kernel saw; the slow test trains real tiny PaDiM runs three ways and compares records.
"""
from __future__ import annotations

import os
import subprocess
import sys
from unittest import mock

import pytest
import yaml

import inprocess
from stand_in import make_project, stand_in_code
from vadbench import records
from vadbench.data.demo import DemoSpec, build_demo_dataset
from vadbench.errors import ConfigError
from vadbench.launch import runner, workers

STAND_IN = stand_in_code('"seen": {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")}, '
                         '"pid": os.getppid()', log=False)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A working dir with a tiny dataset layout, an experiment file and the stand-in notebook."""
    return make_project(tmp_path, monkeypatch, STAND_IN, kernel=True, device="cpu")  # workers are processes


def test_cpu_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert workers.worker_envs(2, "cpu") == [{"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}] * 2
    assert workers.worker_envs(32, "cpu")[0]["OMP_NUM_THREADS"] == "1"
    with pytest.raises(ConfigError, match="--workers must be at least 1"):
        workers.worker_envs(0, "cpu")


def test_cuda_workers_get_one_gpu_each(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert workers.worker_envs(None, "auto") == [{"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in workers.worker_envs(3, "cuda")] == ["2", "5", "2"]
    assert "OMP_NUM_THREADS" in workers.worker_envs(2, "cpu")[0]  # device cpu ignores the GPUs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match="no GPU is visible"):
        workers.worker_envs(2, "cuda")


def test_slurm_executor_gets_the_params(tmp_path):
    (tmp_path / "s.yaml").write_text("partition: gpu-long\ntime_min: 90\ngpus_per_node: 2\naccount: lab\n")
    spec = workers.load_slurm_spec(tmp_path / "s.yaml")
    with mock.patch("submitit.AutoExecutor") as auto:
        workers.make_executor("slurm", tmp_path / "logs", spec)
    auto.assert_called_once_with(folder=str(tmp_path / "logs"), cluster="slurm")
    params = auto.return_value.update_parameters.call_args.kwargs
    assert (params["slurm_partition"], params["timeout_min"], params["gpus_per_node"], params["slurm_account"]) == \
        ("gpu-long", 90, 2, "lab")
    (tmp_path / "bad.yaml").write_text("partition: x\ngpus: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'gpus'"):
        workers.load_slurm_spec(tmp_path / "bad.yaml")


@pytest.mark.parametrize("how", [{"workers": 2}, {"launcher": "submitit-local", "workers": 2}])
def test_launchers_record_like_a_plain_run(project, how):
    result = runner.run_experiment("exp.yaml", "out", **how)
    assert (result.done, result.failed) == (2, ["dr d/broken seed0"])
    failed = records.read_record(project / "out/t/dr/d/broken/seed0")
    assert failed["status"] == "failed" and "deliberate failure" in failed["error"]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    ok = [records.read_record(project / f"out/t/dr/d/{c}/seed0") for c in ("a", "c")]
    assert all(r["status"] == "ok" and r["seen"]["OMP_NUM_THREADS"] == threads for r in ok)
    if how.get("launcher") == "submitit-local":
        assert list((project / "outputs/launcher/submitit-local/t").rglob("*_log.out"))
    again = runner.run_experiment("exp.yaml", "out", **how)  # finished runs are skipped whichever launcher
    assert (again.skipped, again.done) == (2, 0)


def test_unknown_launcher_is_an_error(project):
    with pytest.raises(ConfigError, match="unknown launcher 'k8s'"):
        runner.run_experiment("exp.yaml", "out", launcher="k8s")


# ---- real runs: plain vs --workers 2 vs --launcher submitit-local -----------------------------

TINY = {
    "name": "tiny", "seeds": [0, 1], "device": "cpu",
    "datasets": [{"name": "demo", "kind": "demo", "root": "data/demo", "categories": ["brick"]}],
    # PaDiM on the shipped MobileNetV2: a cheap deterministic fit; what is compared is how each launcher records it
    "models": [{"name": "padim", "kind": "padim", "image_size": 64, "train": {"max_epochs": 1, "batch_size": 4},
                "params": {"backbone": "mobilenet_v2", "n_features": 50}}],
    "evaluation": {"val_ratio": 0.25, "eval_batch_size": 4, "timing_warmup": 1, "timing_iterations": 2,
                   "figure_images": 2},
}
DETERMINISTIC = ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1", "pixel_f1", "image_threshold")


@pytest.mark.slow
def test_workers_and_submitit_local_match_a_plain_run(tmp_path):
    build_demo_dataset(tmp_path / "data/demo", DemoSpec(
        categories=("brick",), crop=64, n_train=8, n_test_good=3, n_test_defect=3))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    # the launchers' processes run the notebooks themselves (no kernel each): what is compared is the records
    env = inprocess.subprocess_env(tmp_path / "engine", {k: v for k, v in os.environ.items() if k != "VADBENCH_NOTEBOOKS"})
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    for out, extra in (("plain", []), ("workers", ["--workers", "2"]), ("submitit", ["--launcher", "submitit-local",
                                                                                     "--workers", "2"])):
        # the plain run gets the workers' thread count too: cheaper on a small machine, and like for like
        run_env = {**env, "OMP_NUM_THREADS": threads} if out == "plain" else env
        done = subprocess.run([sys.executable, "-m", "vadbench.cli", "run", "tiny.yaml", "--output", out, *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=1200, env=run_env)
        assert done.returncode == 0, done.stderr[-3000:]
    for seed in (0, 1):
        plain, workers, submitit = (records.read_record(tmp_path / out / "tiny/padim/demo/brick" / f"seed{seed}")
                                    for out in ("plain", "workers", "submitit"))
        for other in (workers, submitit):
            assert other["status"] == plain["status"] == "ok"
            assert other["config_hash"] == plain["config_hash"] and other["config"] == plain["config"]
            assert other["split"] == plain["split"] and other["training"]["steps_run"] == plain["training"]["steps_run"] == 2
            for key in DETERMINISTIC:  # same seed, same data: same numbers up to float reduction order
                assert other["metrics"][key] == pytest.approx(plain["metrics"][key], rel=1e-4, abs=1e-6), key
            assert other["environment"]["torch_threads"] == int(threads)
            assert other["timing"]["model_flops_per_image"] == plain["timing"]["model_flops_per_image"] > 0
            assert other["timing"]["model_params"] == plain["timing"]["model_params"] > 0
            assert other["speed"] == plain["speed"] == []  # the GPU protocol runs on CUDA runs only by default
