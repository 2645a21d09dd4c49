"""The EfficientAD teacher, in one place: resolve it from params, distil and cache it, label it, check it.

`teacher:` in the params is `anomalib` (anomalib's pretrained teacher from its cache; never downloaded
by us), a `pretrained_teacher_*.pth` path, `distilled` (distilled offline as `distill:` says, cached
under $VADBENCH_CACHE/teachers, built before the runs) or `random` (not the paper's model).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from vadbench import paths
from vadbench.config import DistillParams, EfficientAdParams
from vadbench.errors import InputMissingError
from vadbench.models import backbones, distill
from vadbench.models.distill import DistillSettings

log = logging.getLogger(__name__)


def settings_of(params: EfficientAdParams) -> DistillSettings:
    """The distillation settings of an EfficientAD model with `teacher: distilled`."""
    d = params.distill or DistillParams()
    return DistillSettings(
        backbone=d.backbone, images=d.images, model_size=params.model_size, out_channels=params.teacher_out_channels,
        steps=d.steps, batch_size=d.batch_size, crop=d.crop, image_size=d.image_size, lr=d.lr, layers=list(d.layers),
        seed=d.seed)


# ---- the cache of distilled teachers -----------------------------------------------------------

def teacher_key(settings: DistillSettings) -> str:
    """Short hash of the settings, the code version and the image files (relative paths and sizes)."""
    folder = Path(settings.images)
    listing = [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in distill.training_images(folder)]
    text = json.dumps({"version": distill.VERSION, "settings": asdict(settings), "images": listing}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def teachers_dir() -> Path:
    """Where distilled teachers are cached: <cache folder>/teachers (vadbench.paths.cache_dir)."""
    return paths.cache_dir() / "teachers"


def cached_teacher_path(settings: DistillSettings) -> Path:
    """The cache file a teacher with these settings is (or will be) stored in."""
    return teachers_dir() / f"{settings.backbone.partition(':')[0]}-{settings.model_size}-{teacher_key(settings)}.pth"


def ensure_teacher(settings: DistillSettings) -> Path:
    """The cached teacher for these settings, distilled first when it is missing."""
    path = cached_teacher_path(settings)
    if path.is_file() and distill.read_sidecar(path) is not None:
        log.info("distilled teacher up to date: %s", path)
        return path
    distill.distil_teacher(settings, path)
    return path


def build_command(settings: DistillSettings, out: Path) -> str:
    """The `vadbench distill-teacher` command line that builds a teacher with these settings."""
    layers = f" --layers {','.join(settings.layers)}" if settings.layers else ""
    return (f"vadbench distill-teacher --backbone {settings.backbone} --images {settings.images} "
            f"--size {settings.model_size} --steps {settings.steps} --batch-size {settings.batch_size} "
            f"--crop {settings.crop} --image-size {settings.image_size} --lr {settings.lr} "
            f"--seed {settings.seed}{layers} --out {out}")


# ---- resolve, check, prepare ---------------------------------------------------------------------

def anomalib_teacher_path(model_size: str) -> Path:
    """Where anomalib keeps its pretrained teacher of a model size (its weights cache)."""
    from anomalib.utils.path import get_pretrained_weights_dir

    return get_pretrained_weights_dir() / "efficientad_pretrained_weights" / f"pretrained_teacher_{model_size}.pth"


def resolve(params: EfficientAdParams, seed: int) -> tuple[Path | None, str]:
    """The teacher file to load (None for random) and how the record names it; InputMissingError when absent."""
    if params.teacher == "random":
        return None, f"random (seed {seed}) - not the paper's pretrained teacher"
    if params.teacher == "distilled":
        settings = settings_of(params)
        path = cached_teacher_path(settings)
        if not path.is_file() or distill.read_sidecar(path) is None:
            raise InputMissingError(
                f"distilled EfficientAD teacher {path} not built yet: `vadbench run <this params file>` builds it "
                f"before training, or build it by hand: {build_command(settings, path)}")
        return path, label(path)
    path = anomalib_teacher_path(params.model_size) if params.teacher == "anomalib" else Path(params.teacher)
    if not path.is_file():
        raise InputMissingError(
            f"EfficientAD teacher weights {path} not found. Download anomalib's efficientad_pretrained_weights.zip "
            f"on a machine with internet and unpack it so this file exists, or set models[].params.teacher to a "
            "pretrained_teacher_*.pth path, or to 'random' (demo only: not the paper's model)."
        )
    return path, label(path)


def label(path: Path) -> str:
    """`distilled:<backbone> (<path>, ...)` for a teacher with a distillation sidecar, else `pretrained:<path>`."""
    info = distill.read_sidecar(path)
    if info is None:
        return f"pretrained:{path}"
    return (f"distilled:{info['backbone']} ({path}; {info['steps']} steps on {info['n_images']} images "
            f"from {info['images']}; final loss {info['final_loss']:.4f})")


def check_teacher(params: EfficientAdParams) -> None:
    """Raise InputMissingError before training when the teacher (or what distils it) is missing."""
    if params.teacher == "distilled":
        settings = settings_of(params)
        backbones.parse(settings.backbone)
        distill.training_images(settings.images)
        return
    resolve(params, seed=0)


def prepare(params: EfficientAdParams) -> None:
    """Distil the teacher the params ask for when it is not cached yet."""
    if params.teacher == "distilled":
        ensure_teacher(settings_of(params))
