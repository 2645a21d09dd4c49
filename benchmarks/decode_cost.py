"""Measure the full-decode check of one full-size MVTec AD category (not a test; run by hand).

    python benchmarks/decode_cost.py /tmp/mvtec-replica [carpet]

Builds (once) a replica of the category at the real counts and size (1024 px RGB PNGs of a noisy texture,
which compress about like MVTec's photos, and their masks), then times `vadbench data check` on it cold
(every file decoded) and warm (the per-file cache).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vadbench.data import checks
from vadbench.registry import MVTEC_AD_COUNTS

SIZE = 1024


def build(root: Path, category: str) -> int:
    """The category's train/good, test/good, test/defect and ground_truth files at full size; the file count."""
    n_train, n_good, n_defect = MVTEC_AD_COUNTS[category]
    rng = np.random.default_rng(0)
    base = np.kron(rng.normal(120, 25, (SIZE // 32, SIZE // 32, 3)), np.ones((32, 32, 1)))
    folder, written = root / category, 0
    for sub, n in (("train/good", n_train), ("test/good", n_good), ("test/cut", n_defect)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            path = folder / sub / f"{i:03d}.png"
            if not path.exists():
                pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(path)
            written += 1
    (folder / "ground_truth/cut").mkdir(parents=True, exist_ok=True)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[300:500, 400:700] = 255
    for i in range(n_defect):
        Image.fromarray(mask).save(folder / "ground_truth/cut" / f"{i:03d}_mask.png")
        written += 1
    return written


def main(root: Path, category: str = "carpet") -> None:
    files = build(root, category)
    os.environ["VADBENCH_CACHE_DIR"] = str(root / "cache")
    for what in ("cold", "warm"):
        if what == "cold":
            for old in (root / "cache").rglob("*.json"):
                old.unlink()
        t0 = time.perf_counter()
        result = checks.check_category("mvtec_ad", root, category)
        seconds = time.perf_counter() - t0
        print(f"{what}: {files} files of {category} ({SIZE} px) checked in {seconds:.1f} s on {os.cpu_count()} "
              f"cores; errors: {result.errors}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
