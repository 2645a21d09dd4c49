"""The decoded, resized image cache (`evaluation.image_cache`, on by default).

Each image and its mask are decoded and resized once per image size, by anomalib's own dataset code (its
`__getitem__` with the model's Resize), and kept as an (H, W, 4) uint8 array: RGB rounded to uint8 (at most
0.5/255 from anomalib's float value) and the mask (nearest-neighbour, 0/1, exactly anomalib's). Training and
evaluation of every later run at that size read the array back instead of decoding a 700-1024 px PNG.

One file per image: <cache folder>/images/<key[:2]>/<key>.npy (vadbench.paths.cache_dir; $VADBENCH_IMAGE_CACHE
moves it). The key hashes the image and mask paths with their sizes and modification times, the label and the
Resize settings, so a changed file or another size is a miss. Writes are atomic (a concurrent run writing the
same file is harmless); a cache folder that cannot be written is used read-only, with one warning.
A dataset whose augmentations are anything but the model's Resize (random augmentations) is not cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vadbench import paths
from vadbench.data.images import file_stamp

log = logging.getLogger(__name__)

IMAGE_CACHE_ENV = "VADBENCH_IMAGE_CACHE"
_UNWRITABLE: set[Path] = set()  # cache folders found unwritable in this process (warned about once)


def cache_folder() -> Path:
    """Where cached images live: $VADBENCH_IMAGE_CACHE, else <cache folder>/images."""
    return Path(os.environ.get(IMAGE_CACHE_ENV) or paths.cache_dir() / "images")


def resize_settings(augmentations: Any) -> dict[str, Any] | None:
    """The settings of a deterministic Resize (the only augmentation cached), {} for none, None when not cacheable."""
    from torchvision.transforms.v2 import Resize

    if augmentations is None:
        return {}
    if type(augmentations) is Resize:
        return {"size": list(augmentations.size), "interpolation": str(augmentations.interpolation),
                "antialias": augmentations.antialias, "max_size": augmentations.max_size}
    return None


def _stamp(path: Any) -> list:
    """[path, size, mtime_ns] of a file; [] for no path (a normal image's mask)."""
    if not isinstance(path, str) or not path:
        return []
    return [str(Path(path).absolute()), *(file_stamp(path) or [])]


def cache_key(image_path: str, mask_path: Any, label: int, resize: dict[str, Any]) -> str:
    """The cache key of one sample: its files (path, size, mtime), label and the Resize settings."""
    text = json.dumps([_stamp(image_path), _stamp(mask_path), int(label), resize], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def pack(image: torch.Tensor, mask: torch.Tensor | None) -> np.ndarray:
    """(H, W, 4) uint8: the [0, 1] float image rounded to uint8, and the mask as 0/1 (zeros without one)."""
    rgb = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
    alpha = torch.zeros(rgb.shape[:2], dtype=torch.uint8) if mask is None else (mask.reshape(rgb.shape[:2]) > 0)
    return torch.cat([rgb, alpha.to(torch.uint8)[..., None]], dim=2).numpy()


class CachedDataset(Dataset):
    """An anomalib image dataset read through the cache; every other attribute is the dataset's own."""

    def __init__(self, dataset: Any, folder: Path, resize: dict[str, Any]) -> None:
        self.dataset, self.folder, self.resize = dataset, Path(folder), resize
        samples = dataset.samples
        self.rows = list(zip(samples.image_path, samples.mask_path, samples.label_index, strict=True))
        self.masks = str(getattr(dataset.task, "value", dataset.task)) == "segmentation"  # else gt_mask is None

    def __len__(self) -> int:
        return len(self.rows)

    def __getattr__(self, name: str) -> Any:
        if name in ("dataset", "rows", "folder", "resize", "masks"):  # not yet set (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        from anomalib.data import ImageItem
        from torchvision.tv_tensors import Image, Mask

        image_path, mask_path, label = self.rows[index]
        pixels = torch.from_numpy(self.array(index)[0])
        image = Image(pixels[..., :3].permute(2, 0, 1).float().div_(255))
        mask = Mask(pixels[..., 3].bool()) if self.masks and label in (0, 1) else None
        return ImageItem(image=image, gt_mask=mask, gt_label=torch.tensor(label) if label in (0, 1) else None,
                         image_path=image_path, mask_path=mask_path)

    def array(self, index: int) -> tuple[np.ndarray, bool]:
        """Sample `index` as its cached (H, W, 4) array, decoded and stored first on a miss; and whether it was."""
        image_path, mask_path, label = self.rows[index]
        path = self._path(cache_key(image_path, mask_path, label, self.resize))
        array = self._load(path)
        if array is not None:
            return array, False
        item = self.dataset[index]
        array = pack(item.image, item.gt_mask)
        self._save(path, array)
        return array, True

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a miss, or a file cut short: decoded again
            return None

    def _save(self, path: Path, array: np.ndarray) -> None:
        if self.folder in _UNWRITABLE:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
            np.save(tmp, array, allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:
            if self.folder in _UNWRITABLE:
                return
            _UNWRITABLE.add(self.folder)
            log.warning("image cache %s cannot be written (%s): images are decoded each time; set $%s to a "
                        "writable folder", self.folder, exc, IMAGE_CACHE_ENV)


def cached(dataset: Any) -> Any:
    """The dataset read through the image cache, or the dataset itself when its augmentations are not cacheable."""
    resize = resize_settings(getattr(dataset, "augmentations", None))
    if resize is None:
        log.info("image cache not used for %s: its augmentations are not a plain Resize", type(dataset).__name__)
        return dataset
    return CachedDataset(dataset, cache_folder(), resize)


SUBSETS = ("train", "val", "test")


def warm(datamodule: Any, model_transform: Any) -> dict[str, Any]:
    """Split the datamodule now (the trainer reuses the split), give each subset the model's Resize as anomalib
    would, and fill the cache for every image of the run, decoding misses on all cores; facts for the record."""
    from concurrent.futures import ThreadPoolExecutor

    from lightning.pytorch.trainer.states import TrainerFn

    started = time.perf_counter()
    datamodule.setup(TrainerFn.FITTING)
    views = []
    for name in SUBSETS:
        subset = getattr(datamodule, f"{name}_data", None)
        if subset is not None:
            datamodule._update_subset_augmentations(subset, getattr(datamodule, f"{name}_augmentations", None),
                                                    model_transform)  # anomalib's own rule (a static method)
            views.append(cached(subset))
    jobs = [(view, i) for view in views if isinstance(view, CachedDataset) for i in range(len(view))]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PIL and torch release the GIL
        built = sum(pool.map(lambda job: job[0].array(job[1])[1], jobs))
    seconds = time.perf_counter() - started
    log.info("image cache: %d images ready (%d decoded now) in %.1f s", len(jobs), built, seconds)
    return {"image_cache_images": len(jobs), "image_cache_decoded": int(built), "image_cache_seconds": seconds}
