"""A model's outside inputs, checked before any training and built where the params say so: the DRÆM anomaly
source, EfficientAD's penalty images and teacher, PatchCore/PaDiM backbones, the zoo's inputs.

anomalib downloads these when they are missing; we never let it: a missing input is an error that says how
to provide it. Importing this module imports neither torch nor anomalib, so that a batch's preflight costs what
its checks cost; each check imports what it needs (a `kind: anomalib` model's check reads anomalib's classes).
"""
from __future__ import annotations

import logging
from pathlib import Path

from vadbench.config import AnomalibParams, DraemParams, EfficientAdParams, ModelSpec, PadimParams, PatchcoreParams
from vadbench.data.images import images_below
from vadbench.errors import InputMissingError
from vadbench.models import schedules

log = logging.getLogger(__name__)

#: The suffixes anomalib's PerlinAnomalyGenerator globs for (torchvision's IMG_EXTENSIONS), case-sensitively.
GENERATOR_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DTD_FIX = "Unpack DTD there (dtd/images/...), or set models[].params.anomaly_source to 'perlin'."
IMAGENET_FIX = ("Unpack Imagenette there as an ImageFolder root (imagenette2/train), or point "
                "models[].params.imagenet_dir at any folder of class subfolders holding natural photos.")


def check_inputs(spec: ModelSpec) -> None:
    """Raise InputMissingError before any training when a model's outside inputs are missing; log the schedule."""
    params = spec.settings
    if isinstance(params, (DraemParams, EfficientAdParams)):
        log.info("%s: learning rate %s", spec.name, schedules.describe(spec))
    if isinstance(params, DraemParams):
        if params.anomaly_source != "perlin":
            anomaly_source_files(Path(params.anomaly_source))
    elif isinstance(params, (PatchcoreParams, PadimParams)):
        from vadbench.models import backbones

        backbones.parse(params.backbone)
    elif isinstance(params, EfficientAdParams):
        require_images(Path(params.imagenet_dir), "EfficientAD penalty images", IMAGENET_FIX)
        from vadbench.models import teacher

        teacher.check_teacher(params)
    elif isinstance(params, AnomalibParams):
        from vadbench.models import zoo

        zoo.check_model(spec)


def prepare_inputs(spec: ModelSpec) -> None:
    """Build what a model's params say to build before training: a missing distilled teacher (cached)."""
    if isinstance(spec.settings, EfficientAdParams):
        from vadbench.models import teacher

        teacher.prepare(spec.settings)


def require_images(folder: Path, what: str, fix: str) -> list[Path]:
    """The images below folder, raising InputMissingError when there are none."""
    images = images_below(folder)
    if not images:
        raise InputMissingError(f"{what}: {folder} is missing or holds no image. {fix}")
    return images


def anomaly_source_files(folder: Path) -> list[Path]:
    """The texture files anomalib's anomaly generator will read from folder (lower-case suffixes only); an
    InputMissingError naming the fix when there is none."""
    require_images(folder, "DRÆM anomaly source", DTD_FIX)
    files = [p for suffix in GENERATOR_SUFFIXES for p in folder.rglob("*" + suffix)]
    if not files:
        raise InputMissingError(f"DRÆM anomaly source {folder}: anomalib's generator reads no file there: it takes "
                                f"only names ending in {', '.join(GENERATOR_SUFFIXES)} (lower case); rename the files "
                                "(e.g. .JPG to .jpg), or set models[].params.anomaly_source to 'perlin'")
    return files
