"""Offline, deterministic demo data built from the texture photos bundled with scikit-image.

Three builders, each idempotent (a ``manifest.json`` records what was built and a content hash):

* :func:`build_demo_dataset` - an MVTec AD-style dataset (brick, grass, gravel) with synthetic
  defects and exact pixel masks, readable unchanged by ``anomalib.data.MVTecAD``;
* :func:`build_penalty_images` - an ImageFolder of natural photos, standing in for Imagenette
  (EfficientAD's penalty set);
* :func:`build_anomaly_source` - a folder of colour-jittered photo crops, standing in for DTD
  (DRAEM's anomaly source).

Only images that ship inside the scikit-image wheel are used; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from skimage import color
from skimage import data as skdata

from vadbench.data.demo_defects import DEFECT_TYPES, apply_defect

log = logging.getLogger(__name__)

DEMO_CATEGORIES = ("brick", "grass", "gravel")
MANIFEST = "manifest.json"
GENERATOR_VERSION = 1
#: Photos (besides the demo textures) that load from the scikit-image package files, no download.
#: ``cat`` is left out: it is the same picture as ``chelsea``.
NATURAL_PHOTOS = (
    "astronaut", "camera", "chelsea", "coffee", "rocket", "moon", "coins", "clock",
    "hubble_deep_field", "immunohistochemistry", "retina", "motorcycle_left", "motorcycle_right",
    "cell", "page", "text",
)
#: Rows [0, TRAIN_ROWS) of each 512x512 texture feed training crops; rows [TRAIN_ROWS, 512) test crops.
TRAIN_ROWS = 320
PHOTO_SIDE = 512
#: Per-category RGB gain, so the grey textures look like materials and colour defects make sense.
TINTS = {"brick": (1.0, 0.78, 0.62), "grass": (0.72, 1.0, 0.55), "gravel": (0.95, 0.92, 0.84)}


@dataclass(frozen=True)
class DemoSpec:
    """What :func:`build_demo_dataset` builds; any change triggers a rebuild."""

    categories: tuple[str, ...] = DEMO_CATEGORIES
    crop: int = 128  # crop side in the source photo (pixels)
    n_train: int = 40  # normal training crops per category
    n_test_good: int = 15
    n_test_defect: int = 15  # split over the defect types
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError for a spec that cannot be built."""
        unknown = set(self.categories) - set(DEMO_CATEGORIES)
        if unknown or not self.categories:
            raise ValueError(f"categories must be a non-empty subset of {DEMO_CATEGORIES}, got {self.categories}")
        if not 16 <= self.crop <= PHOTO_SIDE - TRAIN_ROWS:
            raise ValueError(f"crop must lie in [16, {PHOTO_SIDE - TRAIN_ROWS}], got {self.crop}")
        if min(self.n_train, self.n_test_good, self.n_test_defect) < 1:
            raise ValueError("n_train, n_test_good and n_test_defect must be >= 1")


# ----------------------------------------------------------------------------- source photos
@cache
def load_photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as uint8 (HxW or HxWx3); raises if it is not installed."""
    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skdata.stereo_motorcycle()
        img = left if name == "motorcycle_left" else right
    else:
        img = getattr(skdata, name)()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name} is {img.dtype}, expected uint8")
    img.setflags(write=False)
    return img


def available_photos(names: tuple[str, ...] = NATURAL_PHOTOS) -> list[str]:
    """The names in ``names`` that load offline here (others are skipped with a warning)."""
    found = []
    for name in names:
        try:
            load_photo(name)
            found.append(name)
        except Exception as exc:  # noqa: BLE001 - any loading failure just means "not available"
            log.warning("skimage photo %s not available offline: %s", name, exc)
    if not found:
        raise RuntimeError("no scikit-image photo loads offline")
    return found


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 from a grey or RGB(A) image."""
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def tint(gray: np.ndarray, category: str) -> np.ndarray:
    """The category's RGB rendering of a grey texture crop."""
    gains = np.asarray(TINTS[category], dtype=np.float64)
    return np.clip(np.rint(gray[..., None] * gains), 0, 255).astype(np.uint8)


def gray_crop(name: str, box: list[int], rot90: int, flip: bool) -> np.ndarray:
    """The grey crop ``box = [y0, x0, y1, x1]`` of a texture photo, rotated then h-flipped."""
    y0, x0, y1, x1 = box
    gray = np.rot90(load_photo(name)[y0:y1, x0:x1], rot90)
    return np.ascontiguousarray(gray[:, ::-1] if flip else gray)


def clean_crop(category: str, box: list[int], rot90: int, flip: bool) -> np.ndarray:
    """The defect-free RGB crop of a demo texture, exactly as written before any defect."""
    return tint(gray_crop(category, box, rot90, flip), category)


# ----------------------------------------------------------------------------- file helpers
def _save_png(path: Path, arr: np.ndarray) -> None:
    """Write a uint8 array as PNG (PIL writes no timestamp, so bytes are reproducible)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def content_hash(root: Path) -> str:
    """SHA-256 over the relative paths and bytes of every file under root except the manifest."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The manifest of a built root, or None."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _cached_build(root: Path, kind: str, params: dict[str, Any], build: Callable[[Path], dict]) -> dict:
    """Run ``build(tmpdir) -> extra manifest`` unless root already holds this build; swap in atomically.

    A root that exists, is not empty and holds no manifest of the same kind is never deleted.
    """
    root = Path(root)
    key = {"kind": kind, "version": GENERATOR_VERSION, "params": json.loads(json.dumps(params))}
    old = read_manifest(root)
    if old is not None and all(old.get(k) == v for k, v in key.items()):
        if old.get("content_sha256") == content_hash(root):
            log.info("%s at %s is up to date", kind, root)
            return old
        log.warning("%s at %s does not match its manifest hash; rebuilding", kind, root)
    if root.exists() and any(root.iterdir()) and (old is None or old.get("kind") != kind):
        raise FileExistsError(f"{root} is not empty and holds no {kind} manifest; refusing to overwrite")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.building-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary shared data folder
    try:
        log.info("building %s at %s with %s", kind, root, key["params"])
        manifest = json.loads(json.dumps({**key, **build(tmp), "content_sha256": content_hash(tmp)}))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return manifest


# ----------------------------------------------------------------------------- MVTec-style demo
def defect_counts(n_defect: int) -> dict[str, int]:
    """Split n_defect test images over DEFECT_TYPES as evenly as possible (earlier types first)."""
    q, r = divmod(n_defect, len(DEFECT_TYPES))
    return {kind: q + (i < r) for i, kind in enumerate(DEFECT_TYPES)}


def _random_box(rng: np.random.Generator, crop: int, rows: tuple[int, int]) -> list[int]:
    """A crop box [y0, x0, y1, x1] lying wholly within rows [rows[0], rows[1]) of the photo."""
    y0 = int(rng.integers(rows[0], rows[1] - crop + 1))
    x0 = int(rng.integers(0, PHOTO_SIDE - crop + 1))
    return [y0, x0, y0 + crop, x0 + crop]


def _random_view(rng: np.random.Generator, crop: int, rows: tuple[int, int]) -> dict[str, Any]:
    """A random crop box with a random rot90 count and horizontal flip."""
    return {"box": _random_box(rng, crop, rows), "rot90": int(rng.integers(4)), "flip": bool(rng.random() < 0.5)}


def _donor(rng: np.random.Generator, category: str, crop: int) -> tuple[str, np.ndarray]:
    """A crop of another demo texture (anywhere in its photo), in that texture's own tint."""
    others = [c for c in DEMO_CATEGORIES if c != category]
    name = others[int(rng.integers(len(others)))]
    return name, clean_crop(name, **_random_view(rng, crop, (0, PHOTO_SIDE)))


def _build_category(out: Path, category: str, spec: DemoSpec) -> dict[str, dict[str, Any]]:
    """Write one category's images and masks under out/<category>; return per-file records."""
    rng = np.random.default_rng([spec.seed, DEMO_CATEGORIES.index(category)])
    train_rows, test_rows = (0, TRAIN_ROWS), (TRAIN_ROWS, PHOTO_SIDE)
    plan = [("train/good", i, None, train_rows) for i in range(spec.n_train)]
    plan += [("test/good", i, None, test_rows) for i in range(spec.n_test_good)]
    for kind, n in defect_counts(spec.n_test_defect).items():
        plan += [(f"test/{kind}", i, kind, test_rows) for i in range(n)]
    records: dict[str, dict[str, Any]] = {}
    for folder, i, kind, rows in plan:
        view = _random_view(rng, spec.crop, rows)
        img, rec = clean_crop(category, **view), dict(view)
        if kind is not None:
            donor_name, donor = _donor(rng, category, spec.crop) if kind == "blob" else (None, None)
            img, mask = apply_defect(img, kind, rng, donor)
            _save_png(out / category / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
            rec.update(mask_frac=round(float((mask > 0).mean()), 4), donor=donor_name)
        _save_png(out / category / folder / f"{i:03d}.png", img)
        records[f"{folder}/{i:03d}.png"] = rec
    return records


def build_demo_dataset(root: Path, spec: DemoSpec = DemoSpec()) -> dict:
    """Build (or reuse) the MVTec AD-style demo dataset under root; return its manifest.

    Layout: ``root/<cat>/{train/good,test/good,test/<defect>}/NNN.png`` and
    ``root/<cat>/ground_truth/<defect>/NNN_mask.png`` (uint8 0/255). Training crops come from rows
    ``[0, TRAIN_ROWS)`` of each photo, test crops from rows ``[TRAIN_ROWS, 512)``. The manifest lists
    every file's crop box, rotation and flip, so each clean crop can be regenerated with :func:`clean_crop`.
    """
    spec.validate()

    def build(out: Path) -> dict:
        crops = {cat: _build_category(out, cat, spec) for cat in spec.categories}
        counts = {cat: dict(sorted(Counter(f.rsplit("/", 1)[0] for f in recs).items())) for cat, recs in crops.items()}
        regions = {"train": [0, 0, TRAIN_ROWS, PHOTO_SIDE], "test": [TRAIN_ROWS, 0, PHOTO_SIDE, PHOTO_SIDE]}
        return {
            "spec": asdict(spec), "categories": list(spec.categories), "regions": regions,
            "tints": TINTS, "counts": counts, "crops": crops,
        }

    return _cached_build(Path(root), "vadbench-demo-mvtec", asdict(spec), build)


# ----------------------------------------------------------------------------- penalty / anomaly source
def _random_square(rng: np.random.Generator, img: np.ndarray, scale: tuple[float, float], size: int) -> np.ndarray:
    """A random square crop (side = scale * shorter image side) of an RGB image, resized to size."""
    h, w = img.shape[:2]
    side = max(8, int(round(rng.uniform(*scale) * min(h, w))))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = Image.fromarray(img[y0 : y0 + side, x0 : x0 + side])
    return np.asarray(patch.resize((size, size), Image.Resampling.BICUBIC))


def _photo_plan(n: int, seed: int) -> tuple[list[str], np.random.Generator, list[str]]:
    """Available photos, a seeded generator and a source name per output image (round robin, shuffled)."""
    names = available_photos()
    rng = np.random.default_rng(seed)
    order = [names[i] for i in rng.permutation(len(names))]
    return names, rng, [order[i % len(order)] for i in range(n)]


def build_penalty_images(root: Path, n: int = 64, size: int = 256, seed: int = 0) -> Path:
    """Build (or reuse) an ImageFolder root ``root/photos/NNN.png`` of natural photo crops; return root.

    Stands in for Imagenette as EfficientAD's penalty set; the demo textures are never used.
    """
    def build(out: Path) -> dict:
        names, rng, plan = _photo_plan(n, seed)
        for i, name in enumerate(plan):
            img = _random_square(rng, _as_rgb(load_photo(name)), (0.4, 1.0), size)
            if rng.random() < 0.5:
                img = img[:, ::-1]
            _save_png(out / "photos" / f"{i:03d}.png", np.ascontiguousarray(img))
        return {"sources": names, "files": {f"photos/{i:03d}.png": s for i, s in enumerate(plan)}}

    _cached_build(Path(root), "vadbench-penalty-images", {"n": n, "size": size, "seed": seed}, build)
    return Path(root)


def _colour_jitter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Random hue rotation, saturation, contrast and brightness of an RGB uint8 image."""
    hsv = color.rgb2hsv(img)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(0.0, 1.0)) % 1.0
    hsv[..., 1] = np.clip(np.maximum(hsv[..., 1], rng.uniform(0.2, 0.5)) * rng.uniform(0.8, 1.5), 0.0, 1.0)
    rgb = color.hsv2rgb(hsv)
    rgb = (rgb - rgb.mean()) * rng.uniform(0.7, 1.4) + rgb.mean() * rng.uniform(0.7, 1.3)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def build_anomaly_source(root: Path, n: int = 32, size: int = 256, seed: int = 0) -> Path:
    """Build (or reuse) a folder ``root/NNN.png`` of zoomed, colour-jittered photo crops; return root.

    Stands in for DTD as DRAEM's anomaly source; the demo textures are never used, so DRAEM's
    synthetic anomalies do not preview the blob defects.
    """
    def build(out: Path) -> dict:
        names, rng, plan = _photo_plan(n, seed)
        for i, name in enumerate(plan):
            tries = [_random_square(rng, _as_rgb(load_photo(name)), (0.15, 0.45), size) for _ in range(3)]
            img = max(tries, key=lambda t: float(t.std()))  # prefer textured crops over flat ones
            img = _colour_jitter(rng, np.rot90(img, int(rng.integers(4))))
            _save_png(out / f"{i:03d}.png", img)
        return {"sources": names, "files": {f"{i:03d}.png": s for i, s in enumerate(plan)}}

    _cached_build(Path(root), "vadbench-anomaly-source", {"n": n, "size": size, "seed": seed}, build)
    return Path(root)
