"""The record's provenance line: which outside images and weights a model used, against what its paper used.

One line per run (`training.provenance`): for EfficientAD the penalty set (Imagenette or ImageNet, told apart by
the ImageNet class folders it holds) and the teacher's origin; for DRÆM the anomaly source; for models with a
pretrained backbone the weights file and its sha256; for random weights, that they are random.
"""
from __future__ import annotations

import re
from pathlib import Path

from vadbench.config import EfficientAdParams
from vadbench.models import backbones

#: The 10 ImageNet classes (WordNet ids) Imagenette keeps.
IMAGENETTE_CLASSES = frozenset({"n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
                                "n03417042", "n03425413", "n03445777", "n03888605"})
_WNID = re.compile(r"n\d{8}")


def penalty_set(folder: Path, images: list[Path]) -> str:
    """What the penalty images are: Imagenette, ImageNet, some ImageNet classes, or not ImageNet class folders."""
    classes = {p.parent.name for p in images if _WNID.fullmatch(p.parent.name)}
    if classes and classes <= IMAGENETTE_CLASSES:
        kind = f"Imagenette ({len(classes)} of ImageNet's 1,000 classes)"
    elif len(classes) >= 1000:
        kind = f"ImageNet ({len(classes):,} classes)"
    elif classes:
        kind = f"{len(classes)} ImageNet classes"
    else:
        kind = "no ImageNet class folders (a stand-in)"
    return f"penalty images: {kind}, {len(images):,} images in {folder} (the paper: ImageNet)"


def teacher(params: EfficientAdParams, path: Path | None, label: str) -> str:
    """Where the EfficientAD teacher's weights come from, with the file's sha256."""
    if path is None:
        return "teacher: random (not pretrained; the paper's is distilled from WideResNet-101 on ImageNet)"
    digest = backbones.sha256(path)
    if params.teacher == "anomalib":
        return (f"teacher: anomalib's pretrained_teacher_{params.model_size}.pth, {path} (sha256 {digest}): an "
                "unofficial reimplementation's distillation, not the authors' weights")
    if label.startswith("distilled:"):
        return f"teacher: distilled by vadbench from {label.split(' ', 1)[0].removeprefix('distilled:')}, {path} " \
               f"(sha256 {digest}; the paper's: from WideResNet-101 on ImageNet)"
    return f"teacher: a given file {path} (sha256 {digest}; origin not known to vadbench)"


def anomaly_source(source: str) -> str:
    """DRÆM's anomaly source against the paper's DTD."""
    if source == "perlin-only":
        return "anomaly source: Perlin noise only (the paper: DTD textures); no pretrained weights"
    return f"anomaly source: {source} (the paper: DTD's 5,640 textures); no pretrained weights"
