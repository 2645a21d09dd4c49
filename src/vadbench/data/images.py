"""Image files: the suffixes every part of vadbench counts as images, listing, full decode checks cached per file
(size, mtime), and the path rule anomalib enforces."""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vadbench import paths

log = logging.getLogger(__name__)

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


# ---- full decode checks, cached per file (size, mtime) ----------------------------------------------

#: Characters anomalib accepts in a path (anomalib.data.utils.path.validate_path): printable ASCII only.
ANOMALIB_PATH = re.compile(r"[\x20-\x7E]+")


@dataclass
class _Cache:
    """Decode results by absolute path: {"stamp": [size, mtime_ns], "size": [w, h] or None, "error": str or None}."""

    entries: dict
    changed: bool = False


_CACHE: contextvars.ContextVar[_Cache | None] = contextvars.ContextVar("decode_cache", default=None)


def anomalib_refuses(path: Path | str) -> bool:
    """True when anomalib would refuse this path ("Path contains non-printable characters"): non-ASCII in it."""
    return not ANOMALIB_PATH.fullmatch(str(path))


@dataclass(frozen=True)
class Decoded:
    """A fully decoded image file: its (width, height), or the error that stopped decoding."""

    size: tuple[int, int] | None
    error: str | None = None


def decode(path: Path) -> Decoded:
    """Decode every pixel of an image (not only its header); a truncated or corrupt file gives its error."""
    try:
        with Image.open(path) as im:
            im.load()
            return Decoded(im.size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return Decoded(None, f"{type(exc).__name__}: {exc}")


def decode_all(paths: list[Path]) -> dict[Path, Decoded]:
    """Decode many files on all cores (PIL releases the GIL while decoding); cached per (size, mtime) when a
    `decode_cache` is open."""
    cache = _CACHE.get()
    out: dict[Path, Decoded] = {}
    todo = []
    for path in paths:
        key, stamp = str(Path(path).absolute()), file_stamp(path)
        hit = cache.entries.get(key) if cache is not None else None
        if isinstance(hit, dict) and stamp is not None and hit.get("stamp") == stamp:
            out[path] = Decoded(tuple(hit["size"]) if hit.get("size") else None, hit.get("error"))
        else:
            todo.append(path)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for path, decoded in zip(todo, pool.map(decode, todo)):
            out[path] = decoded
            stamp = file_stamp(path)
            if cache is not None and stamp is not None:
                cache.entries[str(Path(path).absolute())] = {"stamp": stamp, "size": decoded.size, "error": decoded.error}
                cache.changed = True
    return out


def file_stamp(path: Path | str) -> list[int] | None:
    """[size, mtime_ns] of a file (what tells a changed file from the one cached), None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def cache_file(root: Path | str) -> Path:
    """Where the decode results of a dataset root are cached: <cache folder>/image-checks (vadbench.paths.cache_dir)."""
    base = paths.cache_dir() / "image-checks"
    digest = hashlib.sha256(str(Path(root).absolute()).encode()).hexdigest()[:16]
    return base / f"{digest}.json"


@contextlib.contextmanager
def decode_cache(root: Path | str) -> Iterator[None]:
    """Cache `decode_all` results of files below root on disk for the duration (a cache that cannot be read or
    written is rebuilt or skipped, never an error)."""
    path = cache_file(root)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        entries = {}
    cache = _Cache(entries if isinstance(entries, dict) else {})
    token = _CACHE.set(cache)
    try:
        yield
    finally:
        _CACHE.reset(token)
        if cache.changed:
            _save(path, cache.entries)


def _save(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("image check cache %s not written (%s): the next check decodes again", path, exc)
