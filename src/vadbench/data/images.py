"""Image files: the suffixes every part of vadbench counts as images, listing and header reads."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

#: Suffixes (compared lower-case) of the image files vadbench lists, checks, counts and trains on.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: Path) -> bool:
    """True for a file whose suffix is one of IMAGE_SUFFIXES (any case)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()


def images_in(folder: Path) -> list[Path]:
    """Image files directly in a folder, sorted (none when the folder is missing)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image(p))


def images_below(folder: Path) -> list[Path]:
    """Image files anywhere below a folder, sorted (none when the folder is missing)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if is_image(p))


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header, or None when the file cannot be read as an image."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
