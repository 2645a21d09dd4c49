"""Build anomalib models (DRÆM, EfficientAD, PatchCore, PaDiM, any other by class: models.zoo) from params.

DRÆM needs an anomaly source (DTD textures, or Perlin noise only); EfficientAD needs a teacher
and ImageNet-like penalty images. anomalib downloads these when they are missing; we never let it:
a missing input is an error that says how to provide it, and the record states what was used.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from anomalib.models import Draem, EfficientAd, Padim, Patchcore
from anomalib.models.components import AnomalibModule

from vadbench.config import AnomalibParams, DraemParams, EfficientAdParams, ModelSpec, PadimParams, PatchcoreParams
from vadbench.errors import ConfigError
from vadbench.models import backbones, draem, preflight, provenance, schedules, teacher, zoo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuiltModel:
    """An anomalib model and what it was built from, for the record."""

    module: AnomalibModule
    model_class: str
    facts: dict[str, Any]


class _TeacherEfficientAd(EfficientAd):
    """anomalib's EfficientAd with the teacher taken from a given file, or kept random; its StepLR stepped per
    step with `lr_schedule: paper` (anomalib steps it per epoch: vadbench.models.schedules)."""

    def __init__(self, teacher_path: Path | None, lr_schedule: str = "anomalib", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._teacher_path, self._lr_schedule = teacher_path, lr_schedule

    def configure_optimizers(self) -> Any:
        """anomalib's Adam and StepLR(0.95 x the run's steps); stepped per step for the paper's schedule."""
        config = super().configure_optimizers()
        return schedules.per_step(config) if self._lr_schedule == "paper" else config

    def prepare_pretrained_model(self) -> None:
        """Load the teacher from our resolved path; with no path the random initialisation stays."""
        if self._teacher_path is None:
            log.warning("EfficientAD teacher is RANDOM (not the paper's pretrained teacher)")
            return
        state = torch.load(self._teacher_path, map_location=self.device, weights_only=True)
        self.model.teacher.load_state_dict(state)


def build_model(spec: ModelSpec, seed: int) -> BuiltModel:
    """Construct the anomalib model a ModelSpec describes (weights initialised under `seed`)."""
    torch.manual_seed(seed)
    params = spec.settings
    size = (spec.image_size, spec.image_size)
    common = {"evaluator": False, "visualizer": False, "post_processor": False}
    if isinstance(params, DraemParams):
        return _build_draem(params, size, common)
    if isinstance(params, (PatchcoreParams, PadimParams)):
        return _build_memory_bank(params, size, common)
    if isinstance(params, EfficientAdParams):
        return _build_efficientad(params, size, common, seed)
    if isinstance(params, AnomalibParams):
        module, facts = zoo.build_zoo_model(spec, size, common, seed)
        return BuiltModel(module, params.class_name, facts)
    raise ConfigError(f"models[{spec.name}]: no builder for kind {spec.kind!r}")


def _build_memory_bank(params: PatchcoreParams | PadimParams, size: tuple[int, int], common: dict) -> BuiltModel:
    """PatchCore or PaDiM on a locally loaded ImageNet backbone, passed to anomalib as a module (no hub)."""
    net = backbones.load_backbone(params.backbone)
    facts = {"backbone": f"{params.backbone} ({backbones.parse(params.backbone)[1]})", "layers": list(params.layers),
             "provenance": f"backbone: {backbones.origin(params.backbone)}"}
    if isinstance(params, PatchcoreParams):
        module = Patchcore(backbone=net, layers=params.layers, coreset_sampling_ratio=params.coreset_sampling_ratio,
                           num_neighbors=params.num_neighbors,
                           pre_processor=Patchcore.configure_pre_processor(image_size=size), **common)
        facts["malloc_mmap_threshold"] = os.environ.get("MALLOC_MMAP_THRESHOLD_", "unset")
        return BuiltModel(module, "Patchcore", facts)
    module = Padim(backbone=net, layers=params.layers, n_features=params.n_features,
                   pre_processor=Padim.configure_pre_processor(image_size=size), **common)
    return BuiltModel(module, "Padim", facts)


def _build_draem(params: DraemParams, size: tuple[int, int], common: dict) -> BuiltModel:
    """DRÆM with an explicit anomaly source (a texture folder, or Perlin noise only) and the official code's choices
    where the params ask for them (vadbench.models.draem)."""
    with tempfile.TemporaryDirectory() as empty:
        # An existing empty folder stops anomalib from downloading DTD; the augmenter is set below.
        module = draem.ChoicesDraem(params, dtd_dir=empty, enable_sspcab=params.enable_sspcab,
                                    sspcab_lambda=params.sspcab_lambda, beta=params.beta,
                                    pre_processor=Draem.configure_pre_processor(image_size=size), **common)
    if params.anomaly_source == "perlin":
        source = "perlin-only"
        module.augmenter = PerlinAnomalyGenerator(anomaly_source_path=None, blend_factor=params.beta)
    else:
        module.augmenter = draem_source(Path(params.anomaly_source), params.beta)
        source = f"dir:{params.anomaly_source} ({len(module.augmenter.anomaly_source_paths)} images)"
    return BuiltModel(module, "Draem", {"anomaly_source": source, **draem.record_facts(params),
                                        "provenance": provenance.anomaly_source(source)})


def _build_efficientad(params: EfficientAdParams, size: tuple[int, int], common: dict, seed: int) -> BuiltModel:
    """EfficientAD with a resolved teacher and an existing penalty image folder."""
    imagenet = Path(params.imagenet_dir)
    penalty = preflight.require_images(imagenet, "EfficientAD penalty images", preflight.IMAGENET_FIX)
    teacher_path, teacher_label = teacher.resolve(params, seed)
    module = _TeacherEfficientAd(
        teacher_path, params.lr_schedule, imagenet_dir=imagenet, teacher_out_channels=params.teacher_out_channels,
        model_size=params.model_size, lr=params.lr, weight_decay=params.weight_decay, padding=params.padding,
        pad_maps=params.pad_maps, pre_processor=EfficientAd.configure_pre_processor(image_size=size), **common,
    )
    line = f"{provenance.penalty_set(imagenet, penalty)}; {provenance.teacher(params, teacher_path, teacher_label)}"
    return BuiltModel(module, "EfficientAd", {"teacher": teacher_label, "provenance": line,
                                              "penalty_images": f"{imagenet} ({len(penalty)} images)"})


def draem_source(folder: Path, beta: tuple[float, float]) -> PerlinAnomalyGenerator:
    """anomalib's anomaly generator on a texture folder (checked first: preflight.anomaly_source_files)."""
    preflight.anomaly_source_files(folder)
    return PerlinAnomalyGenerator(anomaly_source_path=folder, blend_factor=beta)
