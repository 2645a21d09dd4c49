"""Distil an EfficientAD teacher (anomalib's patch description network) from a pretrained backbone, offline.

The paper's recipe where it applies: the backbone sees each image at twice the PDN's input size
(WideResNet-101 at 512 px, PDN at 256 px); its features are locally averaged (3x3), upsampled to the
first layer's grid, concatenated and pooled over channels to the teacher's width (as PatchCore does),
normalised per channel, and the PDN is trained to regress them with MSE and Adam. With a stride-8
first layer the target grid is the PDN's output grid plus a 4-cell border, which is cropped off.
To fit a CPU budget the PDN trains on random crops (``crop`` px) of images resized to ``image_size``,
so patches keep the scale EfficientAD sees. The result is a plain state dict that anomalib's
``EfficientAd`` loads as ``pretrained_teacher_{small,medium}.pth``; a JSON sidecar records how it was made.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.transforms import v2

from vadbench.config import DistillParams
from vadbench.data.images import images_below
from vadbench.errors import InputMissingError
from vadbench.models import backbones

log = logging.getLogger(__name__)

FORMAT = "vadbench-distilled-teacher"
VERSION = 1
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_PARAMS = DistillParams()  # the params' defaults are the command's defaults


@dataclass(frozen=True)
class DistillSettings:
    """Everything that determines a distilled teacher (the cache key hashes these and the images)."""

    backbone: str = _PARAMS.backbone
    images: str = _PARAMS.images
    model_size: str = "small"
    out_channels: int = 384
    steps: int = _PARAMS.steps
    batch_size: int = _PARAMS.batch_size
    crop: int = _PARAMS.crop
    image_size: int = _PARAMS.image_size
    lr: float = _PARAMS.lr
    weight_decay: float = 1e-5
    layers: list[str] = field(default_factory=list)
    seed: int = _PARAMS.seed


def sidecar_path(teacher: Path | str) -> Path:
    """The JSON record beside a teacher file: teacher.pth -> teacher.json."""
    return Path(teacher).with_suffix(".json")


def read_sidecar(teacher: Path | str) -> dict[str, Any] | None:
    """The distillation record beside a teacher file, or None when it has none (or not ours)."""
    path = sidecar_path(teacher)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None


def training_images(folder: Path | str) -> list[Path]:
    """Image files below a folder, sorted; raises InputMissingError when there are none."""
    files = images_below(Path(folder))
    if not files:
        raise InputMissingError(f"distillation images: {folder} is missing or holds no image; point --images "
                                "(or distill.images) at any folder of natural photos, e.g. Imagenette, or run "
                                "`vadbench demo-data` for the offline stand-in outputs/data/demo_penalty")
    return files


# ----------------------------------------------------------------------------- networks
def make_pdn(model_size: str, out_channels: int) -> nn.Module:
    """anomalib's patch description network (the EfficientAD teacher architecture), freshly initialised."""
    from anomalib.models.image.efficient_ad.torch_model import (
        MediumPatchDescriptionNetwork,
        SmallPatchDescriptionNetwork,
    )

    cls = SmallPatchDescriptionNetwork if model_size == "small" else MediumPatchDescriptionNetwork
    return cls(out_channels=out_channels, padding=False)


class FeatureTarget(nn.Module):
    """Backbone features as the paper's distillation target, on the PDN's output grid."""

    def __init__(self, backbone: nn.Module, layers: list[str], out_channels: int) -> None:
        super().__init__()
        self.extractor = create_feature_extractor(backbone, return_nodes={layer: layer for layer in layers}).eval()
        self.layers, self.out_channels = layers, out_channels
        for p in self.extractor.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Targets (B, out_channels, *grid) for images in [0, 1] shown to the PDN at their size."""
        x = F.interpolate(images, scale_factor=2.0, mode="bilinear", align_corners=False)
        feats = self.extractor((x - _MEAN.to(x)) / _STD.to(x))
        first = feats[self.layers[0]].shape[-2:]
        maps = [F.interpolate(F.avg_pool2d(feats[k], 3, 1, 1), size=first, mode="bilinear", align_corners=False)
                for k in self.layers]
        cat = torch.cat(maps, dim=1)
        b, c, h, w = cat.shape
        flat = cat.permute(0, 2, 3, 1).reshape(-1, 1, c)
        cat = F.adaptive_avg_pool1d(flat, self.out_channels).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return fit_grid(cat, grid)


def fit_grid(t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Centre-crop a slightly larger target grid (the PDN's valid convolutions lose a border), else resize."""
    h, w = t.shape[-2:]
    if 0 <= h - grid[0] <= 16 and 0 <= w - grid[1] <= 16:
        top, left = (h - grid[0]) // 2, (w - grid[1]) // 2
        return t[..., top:top + grid[0], left:left + grid[1]]
    return F.interpolate(t, size=grid, mode="bilinear", align_corners=False)


# ----------------------------------------------------------------------------- data
def load_images(files: list[Path], image_size: int) -> list[torch.Tensor]:
    """RGB images as float tensors in [0, 1], shorter side resized to image_size."""
    out = []
    for path in files:
        img = Image.open(path).convert("RGB")
        scale = image_size / min(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BICUBIC)
        out.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255.0)
    return out


def augmenter(crop: int, image_size: int) -> v2.Compose:
    """Random crops near EfficientAD's scale (area factor 1/2..2), flips, colour jitter, grey 10 % (as the paper)."""
    area = (crop / image_size) ** 2
    return v2.Compose([
        v2.RandomResizedCrop(crop, scale=(area / 2, min(1.0, area * 2)), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ColorJitter(0.2, 0.2, 0.2),
        v2.RandomGrayscale(0.1),
    ])


def sample_batch(images: list[torch.Tensor], aug: v2.Compose, n: int, gen: torch.Generator) -> torch.Tensor:
    """n augmented crops from randomly chosen images."""
    idx = torch.randint(len(images), (n,), generator=gen).tolist()
    return torch.stack([aug(images[i]) for i in idx]).clamp(0.0, 1.0)


# ----------------------------------------------------------------------------- distillation
def channel_stats(target: FeatureTarget, images: list[torch.Tensor], aug: v2.Compose, grid: tuple[int, int],
                  batch_size: int, gen: torch.Generator, batches: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the targets over a few augmented batches."""
    feats = torch.cat([target(sample_batch(images, aug, batch_size, gen), grid) for _ in range(batches)])
    std = feats.std(dim=(0, 2, 3), keepdim=True)
    # A channel that barely fires in these crops would turn every later activation into a huge target:
    # floor its std at a tenth of the median channel's.
    return feats.mean(dim=(0, 2, 3), keepdim=True), std.clamp_min(0.1 * float(std.median()) + 1e-6)


def distillation_loss(pdn: nn.Module, target: FeatureTarget, batch: torch.Tensor, mean: torch.Tensor,
                      std: torch.Tensor) -> torch.Tensor:
    """MSE between the PDN's output and the per-channel normalised backbone features."""
    out = pdn(batch)
    return F.mse_loss(out, (target(batch, tuple(out.shape[-2:])) - mean) / std)


def output_grid(pdn: nn.Module, crop: int) -> tuple[int, int]:
    """The PDN's output grid for a crop x crop input."""
    with torch.no_grad():
        return tuple(pdn(torch.zeros(1, 3, crop, crop)).shape[-2:])


@dataclass
class Setup:
    """The fixed parts of a distillation: target network, images, augmentation, grid and target statistics."""

    target: FeatureTarget
    images: list[torch.Tensor]
    aug: v2.Compose
    grid: tuple[int, int]
    mean: torch.Tensor
    std: torch.Tensor
    layers: list[str]
    files: list[Path]


def setup(settings: DistillSettings) -> Setup:
    """Everything but the PDN, reproducibly from settings.seed (the target statistics included)."""
    torch.manual_seed(settings.seed)
    files = training_images(settings.images)
    layers = settings.layers or backbones.default_layers(settings.backbone)
    target = FeatureTarget(backbones.load_backbone(settings.backbone), layers, settings.out_channels)
    grid = output_grid(make_pdn(settings.model_size, settings.out_channels), settings.crop)
    images, aug = load_images(files, settings.image_size), augmenter(settings.crop, settings.image_size)
    torch.manual_seed(settings.seed)
    mean, std = channel_stats(target, images, aug, grid, settings.batch_size, torch.Generator().manual_seed(settings.seed))
    return Setup(target, images, aug, grid, mean, std, layers, files)


def distil_teacher(settings: DistillSettings, out: Path | str) -> dict[str, Any]:
    """Distil a teacher, write its state dict to `out` and the record beside it; return the record."""
    out = Path(out)
    t0 = time.monotonic()
    fixed = setup(settings)
    target, images, aug, mean, std, layers, files = (fixed.target, fixed.images, fixed.aug, fixed.mean, fixed.std,
                                                     fixed.layers, fixed.files)
    torch.manual_seed(settings.seed)
    pdn = make_pdn(settings.model_size, settings.out_channels)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    optimizer = torch.optim.Adam(pdn.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    losses = []
    for step in range(settings.steps):
        loss = distillation_loss(pdn, target, sample_batch(images, aug, settings.batch_size, gen), mean, std)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 25 == 0 or step == settings.steps - 1:
            log.info("distil %s -> PDN-%s: step %d/%d loss %.4f", settings.backbone, settings.model_size, step + 1,
                     settings.steps, losses[-1])
    record = _record(settings, layers, files, losses, time.monotonic() - t0)
    _write(pdn, record, out)
    return record


def _record(settings: DistillSettings, layers: list[str], files: list[Path], losses: list[float],
            seconds: float) -> dict[str, Any]:
    """The sidecar: how the teacher was made and how well it matched its targets."""
    tail = losses[-10:] or [float("nan")]
    return {
        "format": FORMAT, "version": VERSION, "backbone": settings.backbone,
        "backbone_weights": str(backbones.parse(settings.backbone)[1]), "layers": layers,
        "model_size": settings.model_size, "out_channels": settings.out_channels,
        "images": str(settings.images), "n_images": len(files), "steps": settings.steps,
        "settings": asdict(settings), "initial_loss": losses[0] if losses else None,
        "final_loss": float(np.mean(tail)), "final_loss_window": len(tail), "seconds": round(seconds, 1),
        "torch_version": torch.__version__,
    }


def _write(pdn: nn.Module, record: dict[str, Any], out: Path) -> None:
    """Write the state dict and then the sidecar, each atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save(pdn.state_dict(), tmp)
    os.replace(tmp, out)
    side = sidecar_path(out)
    tmp_side = side.with_name(f".{side.name}.tmp")
    tmp_side.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp_side, side)
    log.info("distilled teacher: %s (final loss %.4f, %.0f s)", out, record["final_loss"], record["seconds"])
