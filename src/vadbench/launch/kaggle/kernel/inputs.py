"""Inputs a Kaggle kernel fetches when they are not mounted: DTD, Imagenette, anomalib's EfficientAD teacher.

Fetched only in a kernel whose Kaggle params allow it (enable_internet and fetch_inputs); `vadbench run`
on your own machine never downloads. The download is anomalib's own (`download_and_extract` with the
DownloadInfo anomalib ships, hash-checked by anomalib); each input is then verified before any run
starts (image counts at least the published ones, the teacher file loadable as a state dict), and what
was fetched is written to /kaggle/working/fetched_inputs.json (source, counts, sha256 of the teacher).
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from vadbench.data.images import images_below
from vadbench.errors import InputMissingError

log = logging.getLogger(__name__)

#: Published image counts: DTD r1.0.1 has 47 classes x 120 images; imagenette2 has 9,469 train + 3,925 val.
EXPECTED_IMAGES = {"dtd": 5640, "imagenette": 13394}


def _download_info(kind: str) -> Any:
    """anomalib's DownloadInfo of an input kind."""
    if kind == "dtd":
        from anomalib.models.image.draem.lightning_model import DTD_DOWNLOAD_INFO
        return DTD_DOWNLOAD_INFO
    from anomalib.models.image.efficient_ad.lightning_model import IMAGENETTE_DOWNLOAD_INFO, WEIGHTS_DOWNLOAD_INFO
    return IMAGENETTE_DOWNLOAD_INFO if kind == "imagenette" else WEIGHTS_DOWNLOAD_INFO


def teacher_dir() -> Path:
    """anomalib's folder of pretrained EfficientAD teachers (under its weights cache)."""
    from anomalib.utils.path import get_pretrained_weights_dir

    return get_pretrained_weights_dir() / "efficientad_pretrained_weights"


def fetch_inputs(items: list[str], scratch: Path) -> list[dict[str, Any]]:
    """Fetch each `kind:path` not present yet with anomalib's downloader, verify it, and describe it."""
    from anomalib.data.utils import download_and_extract

    facts = []
    for item in items:
        kind, _, path = item.partition(":")
        if kind == "backbone":  # `source:arch`, by vadbench fetch-backbone's own code
            from vadbench.models.backbones import fetch as fetch_backbone

            facts += fetch_backbone(*reversed(path.split(":", 1)))
            continue
        info = _download_info(kind)
        if kind == "teacher":
            target = teacher_dir() / f"pretrained_teacher_{path}.pth"
            if not target.is_file():
                log.info("fetching anomalib's EfficientAD teacher from %s", info.url)
                download_and_extract(teacher_dir().parent, info)
            facts.append(verify_teacher(target, info.url))
            continue
        local = Path(path)
        if not images_below(local):
            download_root = scratch / "fetched" / kind
            log.info("fetching %s from %s into %s", kind, info.url, download_root)
            download_and_extract(download_root, info)
            source = _images_folder(download_root)
            local.parent.mkdir(parents=True, exist_ok=True)
            if local.is_symlink() or local.exists():
                local.rmdir() if local.is_dir() and not local.is_symlink() else local.unlink()
            local.symlink_to(source.resolve(), target_is_directory=True)
        facts.append(verify_images(local, kind, info.url))
    return facts


def _images_folder(root: Path) -> Path:
    """The extracted folder to use: DTD's `dtd/images`, Imagenette's `imagenette2`, else the root."""
    for candidate in (root / "dtd" / "images", root / "imagenette2"):
        if candidate.is_dir():
            return candidate
    return root


def verify_images(folder: Path, kind: str, source: str) -> dict[str, Any]:
    """Raise InputMissingError unless the folder holds at least the published number of readable images."""
    from PIL import Image

    images = images_below(folder)
    expected = EXPECTED_IMAGES[kind]
    if len(images) < expected:
        raise InputMissingError(f"{kind} at {folder}: {len(images)} images, expected at least {expected} (an empty or "
                                "partial download); delete it and run the kernel again, or mount a complete copy")
    for path in images[:: max(1, len(images) // 20)]:  # a spread sample must decode
        with Image.open(path) as im:
            im.verify()
    log.info("%s verified: %d images in %s", kind, len(images), folder)
    return {"input": kind, "path": str(folder), "source": source, "images": len(images), "expected_at_least": expected}


def verify_teacher(path: Path, source: str) -> dict[str, Any]:
    """Raise InputMissingError unless the teacher file loads as a state dict of tensors; its sha256."""
    import torch

    if not path.is_file():
        raise InputMissingError(f"EfficientAD teacher {path} missing after the download from {source}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file
        raise InputMissingError(f"EfficientAD teacher {path} does not load ({exc}); delete it and fetch again") from exc
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputMissingError(f"EfficientAD teacher {path} is not a state dict of tensors")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    log.info("teacher verified: %s (%d tensors, sha256 %s)", path, len(state), sha)
    return {"input": "teacher", "path": str(path), "source": source, "tensors": len(state), "sha256": sha}
