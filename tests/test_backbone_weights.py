"""The zoo on published backbones, fetched on purpose: timm weights read from the Hugging Face cache offline, records
naming the file and its sha256, the error that names the fetch command, and the fetch itself.

No internet here: the weights are timm's and torchvision's ResNet-18 made locally (random, with a marker), laid out
where huggingface_hub / torch hub keep downloads; `vadbench fetch-backbone` runs against stand-ins of the two download
functions (huggingface_hub.hf_hub_download, torch.hub.download_url_to_file) that copy those local files.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torchvision
import yaml
from huggingface_hub import constants
from safetensors.torch import save_file

from test_zoo import EVALUATION, TRAIN, check_record, spec
from vadbench import cli
from vadbench.config import expand_runs, load_experiment
from vadbench.data.demo import DemoSpec, build_demo_dataset
from vadbench.errors import InputMissingError, KaggleSetupError
from vadbench.launch.kaggle.kernel import inputs
from vadbench.launch.kaggle.shards import shard_inputs
from vadbench.launch.kaggle.spec import KaggleSpec
from vadbench.models import backbones, build, preflight

REPO = "timm/resnet18.a1_in1k"  # what timm.create_model("resnet18", pretrained=True) reads
REVISION = "0" * 40


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """timm's resnet18 as a safetensors file (conv1 weights all 0.5) and torchvision's as a .pth state dict."""
    root = tmp_path_factory.mktemp("weights")
    net = timm.create_model("resnet18", pretrained=False)
    with torch.no_grad():
        net.conv1.weight.fill_(0.5)
    save_file(net.state_dict(), root / "model.safetensors")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / "resnet18.pth")
    return {"timm": root / "model.safetensors", "torchvision": root / "resnet18.pth"}


def put_in_hf_cache(hub: Path, source: Path, filename: str = "model.safetensors") -> Path:
    """Lay a file out as huggingface_hub caches a download: blobs/<sha256>, snapshots/<rev>/<file> -> blob, refs/main."""
    folder = hub / f"models--{REPO.replace('/', '--')}"
    blob = folder / "blobs" / backbones.sha256(source)
    snapshot = folder / "snapshots" / REVISION / filename
    for path in (blob.parent, snapshot.parent, folder / "refs"):
        path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, blob)
    snapshot.unlink(missing_ok=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (folder / "refs" / "main").write_text(REVISION)
    return snapshot


FASTFLOW = {"backbone": "resnet18", "pre_trained": True}


def test_fastflow_pretrained_reads_the_cached_file_and_nothing_else(tmp_path, monkeypatch, weights):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    put_in_hf_cache(tmp_path / "hub", weights["timm"])
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("no network in this test")

    for name in ("getaddrinfo", "create_connection"):  # name lookup and connection: any request starts there
        monkeypatch.setattr(socket, name, no_network)
    built = build.build_model(spec("Fastflow", FASTFLOW), seed=0)
    conv1 = built.module.model.feature_extractor.conv1.weight
    assert torch.equal(conv1, torch.full_like(conv1, 0.5))  # the cached weights, not a random init
    assert attempts == []  # the hub was not asked, even with HF_HUB_OFFLINE unset
    assert built.facts["backbone"] == f"pretrained timm resnet18 ({REPO})"
    assert built.facts["backbone_sha256"] == backbones.sha256(weights["timm"])


def test_without_the_file_the_error_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(InputMissingError, match=r"timm's pretrained resnet18 weights \(timm/resnet18.a1_in1k\) are not "
                                                r"in the Hugging Face cache .* Run `vadbench fetch-backbone resnet18 "
                                                r"--source timm` on a machine with internet"):
        preflight.check_inputs(spec("Fastflow", FASTFLOW))
    preflight.check_inputs(spec("Fastflow", {"backbone": "resnet18"}))  # random weights need no file


def test_fastflow_run_offline_records_the_file_and_its_checksum(tmp_path, weights):
    build_demo_dataset(tmp_path / "data/demo", DemoSpec(
        categories=("brick",), crop=64, n_train=8, n_test_good=3, n_test_defect=3))
    cached = put_in_hf_cache(tmp_path / "hf/hub", weights["timm"])
    before = sorted(p for p in (tmp_path / "hf").rglob("*"))
    experiment = {"name": "zoo", "seeds": [0], "evaluation": EVALUATION,
                  "datasets": [{"name": "demo", "kind": "demo", "root": "data/demo", "categories": ["brick"]}],
                  "models": [{"name": "fastflow", "kind": "anomalib", "image_size": 64,
                              "train": {"max_steps": 2, "batch_size": 4},
                              "params": {"class": "Fastflow", "init_args": FASTFLOW}}]}
    (tmp_path / "zoo.yaml").write_text(yaml.safe_dump(experiment))
    (tmp_path / "torch").mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    done = subprocess.run([sys.executable, "-c", TRAIN, "zoo.yaml", "runs"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    record = check_record(tmp_path / "runs/zoo/fastflow/demo/brick/seed0", "Fastflow")
    training, digest = record["training"], backbones.sha256(weights["timm"])
    assert training["backbone_file"] == str(cached) and training["backbone_sha256"] == digest
    assert training["provenance"] == f"backbone: pretrained timm resnet18 ({REPO}), {cached} (sha256 {digest})"
    assert record["config"]["model"]["params"]["init_args"]["pre_trained"] is True
    assert sorted(p for p in (tmp_path / "hf").rglob("*")) == before and not list((tmp_path / "torch").rglob("*"))


def test_fetch_backbone_stores_timm_and_torchvision_weights_with_their_sha256(tmp_path, monkeypatch, capsys, weights):
    import huggingface_hub

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    asked = []

    def hf_stand_in(repo_id, filename, revision=None, **_):
        asked.append((repo_id, filename, revision))
        return str(put_in_hf_cache(Path(constants.HF_HUB_CACHE), weights["timm"], filename))

    def url_stand_in(url, dst, hash_prefix=None, progress=True):
        asked.append((url, Path(dst).name, hash_prefix))
        shutil.copyfile(weights["torchvision"], dst)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_stand_in)
    monkeypatch.setattr(torch.hub, "download_url_to_file", url_stand_in)
    assert cli.main(["fetch-backbone", "resnet18"]) == 0
    out = capsys.readouterr().out  # torch's downloader prints its own "Downloading: ..." line there too
    stored = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert asked == [("https://download.pytorch.org/models/resnet18-f37072fd.pth", "resnet18-f37072fd.pth", "f37072fd"),
                     (REPO, "model.safetensors", None)]  # torch's downloader is told the hash prefix to check
    assert [(s["source"], s["path"]) for s in stored] == [("torchvision", str(backbones.hub_file("resnet18"))),
                                                          ("timm", str(backbones.timm_file("resnet18")))]
    assert [s["sha256"] for s in stored] == [backbones.sha256(weights["torchvision"]), backbones.sha256(weights["timm"])]
    assert backbones.parse("resnet18") == ("resnet18", backbones.hub_file("resnet18"))  # PatchCore can load it now
    assert cli.main(["fetch-backbone", "resnet18", "--source", "timm"]) == 0 and len(asked) == 3
    assert cli.main(["fetch-backbone", "no_such_net"]) == 2
    assert "neither torchvision nor timm has pretrained ImageNet weights" in capsys.readouterr().err


def test_a_kaggle_kernel_with_internet_fetches_them_through_the_same_code(tmp_path, monkeypatch):
    experiment = {"name": "k", "datasets": [{"name": "d", "kind": "demo", "root": "data", "categories": ["brick"]}],
                  "models": [{"name": "ff", "kind": "anomalib", "train": {"max_steps": 1},
                              "params": {"class": "Fastflow", "init_args": FASTFLOW}},
                             {"name": "pc", "kind": "patchcore", "train": {"max_epochs": 1},
                              "params": {"backbone": "wide_resnet50_2", "layers": ["layer2", "layer3"]}}]}
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(experiment))
    runs = expand_runs(load_experiment(tmp_path / "k.yaml"))
    mounted = {"mounts": {"data": "someone/demo-data"}}
    assert shard_inputs(runs, KaggleSpec(**mounted)).fetch == ["backbone:timm:resnet18",
                                                               "backbone:torchvision:wide_resnet50_2"]
    with pytest.raises(KaggleSetupError, match="timm:resnet18: not on Kaggle; mount it, or turn on enable_internet"):
        shard_inputs(runs, KaggleSpec(enable_internet=False, **mounted))
    fetched = []
    monkeypatch.setattr(backbones, "fetch", lambda arch, source: fetched.append((arch, source)) or [{"arch": arch}])
    assert inputs.fetch_inputs(["backbone:timm:resnet18"], tmp_path) == [{"arch": "resnet18"}]
    assert fetched == [("resnet18", "timm")]


def test_records_know_where_pretrained_weights_came_from():
    built = build.build_model(spec("Stfpm"), seed=0)  # the local offline MobileNetV2
    path = backbones.mobilenet_v2_weights()
    assert built.facts["provenance"] == (f"backbone: torchvision mobilenet_v2 ImageNet weights, {path} "
                                         f"(sha256 {backbones.sha256(path)})")
