"""Synthetic defects of the demo data: shapes (scratch, blob, ellipse) and how they change a clean crop.

Each defect returns the changed image and its exact pixel mask; `vadbench.data.demo` puts them into
an MVTec AD-style dataset.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFECT_TYPES = ("scratch", "blob", "colour")
#: Target defect area, as a fraction of the crop, for blob and colour defects.
AREA_RANGE = (0.06, 0.15)


# ----------------------------------------------------------------------------- defect shapes
def _grid(c: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (yy, xx) of a c x c image."""
    return np.mgrid[0:c, 0:c].astype(np.float64)


def scratch_region(c: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """A 2-4 px wide, gently bent curve about 0.45-0.8 c long; returns (region, dark?)."""
    width = int(rng.integers(2, 5))
    length = rng.uniform(0.45, 0.8) * c
    angle = rng.uniform(0.0, np.pi)
    centre = rng.uniform(0.35 * c, 0.65 * c, size=2)
    direction = np.array([np.sin(angle), np.cos(angle)])
    normal = np.array([direction[1], -direction[0]])
    a, b = centre - 0.5 * length * direction, centre + 0.5 * length * direction
    ctrl = centre + rng.uniform(-0.25, 0.25) * length * normal
    t = np.linspace(0.0, 1.0, int(2 * length) + 2)[:, None]
    pts = (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * b
    yy, xx = _grid(c)
    dist2 = np.full((c, c), np.inf)
    for chunk in np.array_split(pts, max(1, len(pts) // 64)):
        d = (yy[None] - chunk[:, 0, None, None]) ** 2 + (xx[None] - chunk[:, 1, None, None]) ** 2
        dist2 = np.minimum(dist2, d.min(axis=0))
    return dist2 <= (width / 2) ** 2, bool(rng.random() < 0.5)


def blob_region(c: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular star-shaped blob covering roughly AREA_RANGE of the crop."""
    radius = np.sqrt(rng.uniform(*AREA_RANGE) * c * c / np.pi)
    cy, cx = rng.uniform(0.3 * c, 0.7 * c, size=2)
    amps = rng.uniform(-0.18, 0.18, size=4)
    phases = rng.uniform(0.0, 2 * np.pi, size=4)
    yy, xx = _grid(c)
    theta = np.arctan2(yy - cy, xx - cx)
    edge = radius * (1 + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(2, 6), amps, phases)))
    return np.hypot(yy - cy, xx - cx) <= edge


def ellipse_alpha(c: int, rng: np.random.Generator) -> np.ndarray:
    """A blurred ellipse (alpha in [0, 1], exactly 0 outside) covering roughly AREA_RANGE."""
    area = 0.72 * rng.uniform(*AREA_RANGE) * c * c  # the blurred rim adds about 40 %
    aspect = rng.uniform(0.5, 1.0)
    ax_a = np.sqrt(area / (np.pi * aspect))
    ax_b = ax_a * aspect
    angle = rng.uniform(0.0, np.pi)
    cy, cx = rng.uniform(0.3 * c, 0.7 * c, size=2)
    yy, xx = _grid(c)
    u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
    v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    inside = (u / ax_a) ** 2 + (v / ax_b) ** 2 <= 1.0
    alpha = ndimage.gaussian_filter(inside.astype(np.float64), sigma=0.03 * c)
    alpha = np.clip(alpha / max(alpha.max(), 1e-9), 0.0, 1.0)
    alpha[alpha < 0.1] = 0.0
    return alpha


# ----------------------------------------------------------------------------- defects
def _finish(clean: np.ndarray, new: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paste ``new`` into ``clean`` on ``region`` so that exactly the region's pixels change."""
    out = np.where(region[..., None], np.clip(np.rint(new), 0, 255), clean).astype(np.uint8)
    same = region & (out == clean).all(axis=2)
    if same.any():  # rare coincidences (or saturated pixels): nudge so that mask == changed pixels
        vals = out[same].astype(np.int16)
        out[same] = np.where(vals < 128, vals + 6, vals - 6).astype(np.uint8)
    mask = (out != clean).any(axis=2)
    assert np.array_equal(mask, region)
    return out, (mask * 255).astype(np.uint8)


def _hue_offset(rng: np.random.Generator, base: np.ndarray, size: float) -> np.ndarray:
    """A random RGB offset of the given length, orthogonal to the crop's mean colour (a hue change)."""
    mean = base.reshape(-1, 3).mean(axis=0) + 1e-6
    mean /= np.linalg.norm(mean)
    offset = rng.normal(size=3)
    offset -= offset.dot(mean) * mean
    return offset * size / max(np.linalg.norm(offset), 1e-9)


def apply_defect(
    clean: np.ndarray, kind: str, rng: np.random.Generator, donor: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (defective image, mask) for a square uint8 RGB crop; mask is 255 exactly where pixels changed.

    ``donor`` (same shape as ``clean``) supplies the foreign texture of a ``blob``.
    """
    c = clean.shape[0]
    base = clean.astype(np.float64)
    if kind == "scratch":
        region, dark = scratch_region(c, rng)
        new = base * 0.25 if dark else 255.0 - (255.0 - base) * 0.25
    elif kind == "blob":
        if donor is None or donor.shape != clean.shape:
            raise ValueError("a blob needs a donor image shaped like the crop")
        region, new = blob_region(c, rng), donor.astype(np.float64)
    elif kind == "colour":
        alpha = ellipse_alpha(c, rng)
        gain = rng.choice([rng.uniform(0.55, 0.75), rng.uniform(1.3, 1.5)])
        offset = _hue_offset(rng, base, rng.uniform(35.0, 60.0))
        region, new = alpha > 0, base + alpha[..., None] * (base * (gain - 1.0) + offset)
    else:
        raise ValueError(f"unknown defect type {kind!r}; expected one of {DEFECT_TYPES}")
    return _finish(clean, new, region)
