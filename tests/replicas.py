"""Small synthetic replicas of each dataset's exact on-disk layout, for tests (tiny images, real counts).

Each image is a noisy grey texture; a defect image carries a bright rectangle whose mask is written
beside it in the dataset's own mask convention (MVTec: ground_truth/<defect>/NNN_mask.png; VisA:
Data/Masks/Anomaly/NNN.png with multi-class ids to binarise; folder: mask/<name>.png).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from vadbench.registry import MVTEC_AD_COUNTS, VISA_COUNTS, WFDD_CATEGORIES

SIZE = 24


def _pair(rng: np.random.Generator, defect: bool, size: int = SIZE, ids: bool = False) -> tuple[Image.Image, Image.Image]:
    """An RGB image and its mask (255 where defective, or class ids 1..2 when ids=True)."""
    pixels = rng.normal(120, 12, (size, size, 3))
    mask = np.zeros((size, size), np.uint8)
    if defect:
        y, x = rng.integers(2, size // 2, 2)
        pixels[y:y + size // 4, x:x + size // 4] += 90
        mask[y:y + size // 4, x:x + size // 4] = int(rng.integers(1, 3)) if ids else 255
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), Image.fromarray(mask)


def build_mvtec_like(root: Path, counts: dict[str, tuple[int, int, int]], ext: str = ".png",
                     defect_types: tuple[str, ...] = ("crack", "hole"), seed: int = 0, size: int = SIZE) -> Path:
    """<cat>/train/good, <cat>/test/{good,<defect>}, <cat>/ground_truth/<defect>/NNN_mask.png."""
    rng = np.random.default_rng(seed)
    for category, (n_train, n_good, n_defect) in counts.items():
        folder = root / category
        for sub, n in (("train/good", n_train), ("test/good", n_good)):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _pair(rng, False, size)[0].save(folder / sub / f"{i:03d}{ext}")
        for t, kind in enumerate(defect_types):
            (folder / "test" / kind).mkdir(parents=True, exist_ok=True)
            (folder / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
            for i in range(t, n_defect, len(defect_types)):
                image, mask = _pair(rng, True, size)
                image.save(folder / "test" / kind / f"{i:03d}{ext}")
                mask.save(folder / "ground_truth" / kind / f"{i:03d}_mask.png")
    return root


def build_mvtec_ad(root: Path) -> Path:
    """All 15 MVTec AD categories with their published counts."""
    return build_mvtec_like(root, MVTEC_AD_COUNTS)


def build_wfdd(root: Path, n: tuple[int, int, int] = (10, 3, 4)) -> Path:
    """The 4 WFDD categories (counts are not published; any will do), JPEG images as a check of non-PNG input."""
    return build_mvtec_like(root, {c: n for c in WFDD_CATEGORIES}, ext=".jpg",
                            defect_types=("block", "line", "point"))


def build_visa_raw(root: Path, counts: dict[str, tuple[int, int, int]] = VISA_COUNTS, seed: int = 0) -> Path:
    """VisA as released: <obj>/Data/Images/{Normal,Anomaly}/*.JPG, <obj>/Data/Masks/Anomaly/*.png, split_csv/1cls.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for obj, (n_train, n_good, n_bad) in counts.items():
        images, masks = root / obj / "Data" / "Images", root / obj / "Data" / "Masks" / "Anomaly"
        for sub in ("Normal", "Anomaly"):
            (images / sub).mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for i in range(n_train + n_good):
            _pair(rng, False)[0].save(images / "Normal" / f"{i:04d}.JPG", format="JPEG")
            rows.append((obj, "train" if i < n_train else "test", "normal", f"{obj}/Data/Images/Normal/{i:04d}.JPG", ""))
        for i in range(n_bad):
            image, mask = _pair(rng, True, ids=True)
            image.save(images / "Anomaly" / f"{i:03d}.JPG", format="JPEG")
            mask.save(masks / f"{i:03d}.png")
            rows.append((obj, "test", "anomaly", f"{obj}/Data/Images/Anomaly/{i:03d}.JPG",
                         f"{obj}/Data/Masks/Anomaly/{i:03d}.png"))
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("object", "split", "label", "image", "mask"))
        writer.writerows(rows)
    return root


def build_folder(root: Path, categories: tuple[str, ...] = ("widget",), n_good: int = 12, n_defect: int = 4,
                 masks: bool = True, seed: int = 0) -> Path:
    """A user's own folders: <cat>/good, <cat>/defect, optionally <cat>/mask (same file names)."""
    rng = np.random.default_rng(seed)
    for category in categories:
        folder = root / category
        for sub in ("good", "defect") + (("mask",) if masks else ()):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n_good):
            _pair(rng, False)[0].save(folder / "good" / f"g{i:03d}.png")
        for i in range(n_defect):
            image, mask = _pair(rng, True)
            image.save(folder / "defect" / f"d{i:03d}.png")
            if masks:
                mask.save(folder / "mask" / f"d{i:03d}.png")
    return root
