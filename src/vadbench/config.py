"""Experiment params: strict loading, validation and the run grid.

An experiment file (params/experiments/*.yaml) names models, datasets with categories, seeds and
evaluation settings. Unknown keys and wrong types are errors that name the key and the file.
This module uses only yaml and the standard library.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vadbench import registry
from vadbench.errors import ConfigError
from vadbench.strict import build, load_yaml


@dataclass(frozen=True)
class TrainSpec:
    """Training budget. Lightning stops at whichever of max_steps / max_epochs comes first."""

    max_steps: int = -1
    max_epochs: int = -1
    batch_size: int = 8


@dataclass(frozen=True)
class DraemParams:
    """DRÆM hyperparameters passed to anomalib's `Draem` (and its official code's choices; docs/models.md).

    anomaly_source: a texture folder (DTD in the paper; missing or empty is an error) or `perlin` (noise only)."""

    anomaly_source: str = "perlin"
    beta: tuple[float, float] = (0.1, 1.0)  # opacity range of the pasted anomaly (official code: (0.2, 1])
    enable_sspcab: bool = False
    sspcab_lambda: float = 0.1
    lr_schedule: Literal["anomalib", "official"] = "anomalib"  # official: x0.2 at 80 % and 90 % of the epochs
    score_smoothing: int = 0  # odd k: image score = max of the k x k mean-filtered mask map (official 21); 0: raw max
    rotation_probability: float = 0.0  # normal images rotated before augmentation with this probability (official 0.3)
    rotation_degrees: float = 90.0  # ... by an angle drawn uniformly from [-d, d] (official 90)
    weight_init: Literal["anomalib", "official"] = "anomalib"  # official: conv N(0, 0.02), batch norm N(1, 0.02)


@dataclass(frozen=True)
class DistillParams:
    """How `teacher: distilled` builds its teacher (cached under outputs/cache/teachers; see vadbench.models.distill).

    backbone: `mobilenet_v2` (offline weights package), a torchvision architecture whose weights are in
    the torch hub cache (e.g. `wide_resnet101_2`, the paper's), or `<arch>:<weights.pth>`.
    images: a folder of natural photos (Imagenette, or the demo's outputs/data/demo_penalty).
    """

    backbone: str = "mobilenet_v2"
    images: str = "outputs/data/demo_penalty"
    steps: int = 60
    batch_size: int = 8
    crop: int = 64
    image_size: int = 256
    lr: float = 1e-3
    layers: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass(frozen=True)
class EfficientAdParams:
    """EfficientAD hyperparameters passed to anomalib's `EfficientAd`.

    teacher: `anomalib` (anomalib's pretrained teacher from its cache; never downloaded by us),
    a path to a `pretrained_teacher_*.pth` state dict (a distilled one has a JSON sidecar), `distilled`
    (distilled offline from a pretrained backbone as `distill` says, cached, built by `vadbench run`),
    or `random` (a randomly initialised teacher: not the paper's model, recorded as such).
    imagenet_dir: an ImageFolder root of natural images for the penalty loss (Imagenette).
    """

    model_size: Literal["small", "medium"] = "small"
    teacher: str = "anomalib"
    imagenet_dir: str = "datasets/imagenette"
    teacher_out_channels: int = 384
    lr: float = 1e-4
    weight_decay: float = 1e-5
    padding: bool = False
    pad_maps: bool = True
    distill: DistillParams | None = None
    lr_schedule: Literal["anomalib", "paper"] = "anomalib"  # paper: x0.1 from 95 % of the steps, stepped per step


@dataclass(frozen=True)
class PatchcoreParams:
    """PatchCore on a locally loaded backbone (see vadbench.backbones; `mobilenet_v2` is fully offline)."""

    backbone: str = "mobilenet_v2"
    layers: list[str] = field(default_factory=lambda: ["features.6", "features.13"])
    coreset_sampling_ratio: float = 0.1
    num_neighbors: int = 9


@dataclass(frozen=True)
class PadimParams:
    """PaDiM on a locally loaded backbone; n_features: channels kept by PaDiM's random selection."""

    backbone: str = "mobilenet_v2"
    layers: list[str] = field(default_factory=lambda: ["features.3", "features.6", "features.13"])
    n_features: int = 100


@dataclass(frozen=True)
class AnomalibParams:
    """Any anomalib image model by class name (`class:` in params), with keyword arguments for its constructor.

    init_args are checked against the class's signature before training (vadbench.models.zoo); where the
    class takes a `backbone`, `backbone` names one of our local backbones (vadbench.models.backbones).
    """

    class_name: str
    init_args: dict[str, Any] = field(default_factory=dict)


ModelParams = DraemParams | EfficientAdParams | PatchcoreParams | PadimParams | AnomalibParams
MODEL_PARAMS: dict[str, type] = {"draem": DraemParams, "efficientad": EfficientAdParams,
                                 "patchcore": PatchcoreParams, "padim": PadimParams, "anomalib": AnomalibParams}
#: YAML keys spelt differently from their field (`class` is a Python keyword).
_PARAM_KEYS = {"anomalib": {"class": "class_name"}}
#: Smallest image_size each model runs at: EfficientAD's PDN needs 256 px; DRÆM's U-Net pools its input five
#: times (16 px fails); PatchCore/PaDiM use backbone features down to stride 16. Other anomalib models: their
#: own minimums are checked by vadbench.models.zoo.
MIN_IMAGE_SIZE = {"efficientad": 256, "draem": 32, "patchcore": 32, "padim": 32}
#: Fewest training images (after hold-out and train_ratio) each model can fit: PaDiM's per-patch covariance
#: is NaN from one image; the others need one.
MIN_TRAIN_IMAGES = {"efficientad": 1, "draem": 1, "patchcore": 1, "padim": 2}


@dataclass(frozen=True)
class ModelSpec:
    """One model of an experiment: a label, the anomalib model kind and its settings."""

    name: str
    kind: str  # a key of MODEL_PARAMS
    image_size: int = 256
    train: TrainSpec = field(default_factory=TrainSpec)
    params: dict[str, Any] = field(default_factory=dict)  # as written in the file (recorded as such)
    settings: ModelParams = field(init=False, repr=False, compare=False)  # params typed by kind, at load

    def __post_init__(self) -> None:
        if self.kind not in MODEL_PARAMS:
            raise ConfigError(f"models[{self.name}].kind: {self.kind!r} is not one of {list(MODEL_PARAMS)} "
                              "(any other anomalib model: kind: anomalib with params: {class: <its class name>})")
        where = f"models[{self.name}].params"
        params = _field_names(self.kind, self.params, where)
        object.__setattr__(self, "settings", build(MODEL_PARAMS[self.kind], params, where))

    def as_config(self) -> dict[str, Any]:
        """The model as written (name, kind, image size, train budget, params), for the run config."""
        return {"name": self.name, "kind": self.kind, "image_size": self.image_size,
                "train": dataclasses.asdict(self.train), "params": dict(self.params)}


def _field_names(kind: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    """params with YAML keys renamed to their dataclass fields (`class` -> `class_name`); errors name the YAML keys."""
    renames = _PARAM_KEYS.get(kind, {})
    if not renames or not isinstance(params, dict):
        return params
    fields = {f.name: f for f in dataclasses.fields(MODEL_PARAMS[kind])}
    yaml_keys = {key: key for key in fields} | {name: key for key, name in renames.items()}  # field -> YAML key
    unknown = sorted(set(params) - set(yaml_keys.values()), key=str)
    if unknown:
        raise ConfigError(f"unknown key '{where}.{unknown[0]}'; allowed here: {sorted(yaml_keys.values())}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and yaml_keys[name] not in params:
            raise ConfigError(f"missing required key '{where}.{yaml_keys[name]}'")
    return {renames.get(k, k): v for k, v in params.items()}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: a label, its kind, its root folder, the categories to run and the train subset.

    root: when empty, the kind's environment variable (e.g. $VADBENCH_MVTEC_AD_ROOT), else its default
    folder (see `vadbench data where <kind>`); resolved when the file is loaded.
    train_ratio: fraction of the normal training images (after the validation hold-out) that the model
    is trained on, drawn with the run's seed; 1.0 uses all of them.
    """

    name: str
    kind: Literal["demo", "mvtec_ad", "visa", "wfdd", "folder"]
    categories: list[str]
    root: str = ""
    train_ratio: float = 1.0
    val_source: Literal["", "train", "test", "test_half"] = ""  # "": the experiment's evaluation.val_source


#: Fields (of any section, model params included) added after records existed: left at these defaults they stay
#: out of the run config, so the config hashes of older records hold.
ADDED_DEFAULTS = {"protocol": "honest", "val_source": "", "pixel_protocol": "input", "budget_s": 0.0,
                  "image_cache": False,  # records before the cache were uncached: new (cached) runs hash anew
                  "lr_schedule": "anomalib", "score_smoothing": 0, "rotation_probability": 0.0,
                  "rotation_degrees": 90.0, "weight_init": "anomalib"}


@dataclass(frozen=True)
class EvaluationSpec:
    """Held-out split, thresholds and timing settings shared by every run of an experiment.

    val_source: where the validation images (thresholds, EfficientAD's map normalisation) come from:
    `train` (held out from the normal training images: never the test set), `test` (anomalib's default:
    the test set itself) or `test_half` (half of each test set, seeded and label-aware; the other half is
    tested); the last two only to replay studies that used them. A dataset may set its own.
    protocol: `honest` (thresholds: quantiles of validation scores) or `study_replay` (anomalib's adaptive
    F1 threshold on the validation set, as its defaults do); recorded in every record.
    pixel_protocol: `input` (anomalib's: masks resized to the model's image size) or `original` (MVTec AD's
    official protocol: maps upsampled bilinearly to each mask's original size; see vadbench.run.original).
    image_cache: read images decoded and resized once per image size, as uint8 (vadbench.data.cache); `false`
    decodes and resizes every image on every pass, as anomalib does.
    """

    val_ratio: float = 0.2
    val_source: Literal["train", "test", "test_half"] = "train"
    protocol: Literal["honest", "study_replay"] = "honest"
    pixel_protocol: Literal["input", "original"] = "input"
    eval_batch_size: int = 8
    num_workers: int = 0
    image_cache: bool = True
    image_threshold_quantile: float = 1.0
    pixel_threshold_quantile: float = 0.999
    timing_warmup: int = 5
    timing_iterations: int = 20
    figure_images: int = 4


@dataclass(frozen=True)
class SpeedSpec:
    """GPU-grade speed protocol (record `speed` rows; docs/records.md).

    enabled: `auto` times on CUDA runs only (100 warm-ups of a real model take minutes on a CPU),
    `always` also on CPU, `never` skips it. Parameter count and FLOPs are recorded either way.
    precisions: fp16 is a GPU precision (a CPU emulates it, slower than fp32); bf16 runs on both.
    budget_s: stop a measurement's timed passes once they took this many seconds (at least 3 passes; 0: no budget).
    Left at its defaults it is not part of the run config, so config hashes of older records stay valid.
    """

    enabled: Literal["auto", "always", "never"] = "auto"
    warmup: int = 100
    iterations: int = 200
    batch_sizes: list[int] = field(default_factory=lambda: [1, 16])
    precisions: list[Literal["fp32", "fp16", "bf16"]] = field(default_factory=lambda: ["fp32", "fp16"])
    channels_last: bool = False
    paper_protocol: bool = True
    budget_s: float = 0.0


@dataclass(frozen=True)
class Experiment:
    """A whole params file."""

    name: str
    models: list[ModelSpec]
    datasets: list[DatasetSpec]
    seeds: list[int] = field(default_factory=lambda: [0])
    description: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    references: list[str] = field(default_factory=list)  # reference-number files the report shows (external)
    speed: SpeedSpec = field(default_factory=SpeedSpec)
    source: str = ""  # the file it was read from (set by the loader, not a params key)


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid: model × dataset × category × seed."""

    experiment: str
    params_file: str
    model: ModelSpec
    dataset: DatasetSpec
    category: str
    seed: int
    device: str
    evaluation: EvaluationSpec
    speed: SpeedSpec = field(default_factory=SpeedSpec)

    def config(self) -> dict[str, Any]:
        """The resolved config of this run, as stored in its record (`speed` only when not the default)."""
        config = {
            "experiment": self.experiment,
            "model": self.model.as_config(),
            "model_params": _without_added(dataclasses.asdict(self.model.settings)),
            "dataset": _without_added({"name": self.dataset.name, "kind": self.dataset.kind, "root": self.dataset.root,
                                       "train_ratio": self.dataset.train_ratio, "val_source": self.dataset.val_source}),
            "category": self.category,
            "seed": self.seed,
            "device": self.device,
            "evaluation": _without_added(dataclasses.asdict(self.evaluation)),
        }
        if self.speed != SpeedSpec():
            config["speed"] = _without_added(dataclasses.asdict(self.speed))
        return config

    @property
    def val_source(self) -> str:
        """Where this run's validation images come from: the dataset's setting, else the experiment's."""
        return self.dataset.val_source or self.evaluation.val_source

    @property
    def config_hash(self) -> str:
        """Short sha256 of the resolved config: equal hashes mean the same run."""
        text = json.dumps(self.config(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        """Human-readable run name."""
        return f"{self.model.name} {self.dataset.name}/{self.category} seed{self.seed}"


def check_params(name: str, params: ModelParams) -> None:
    """DRÆM's choices in range: an odd smoothing window, a probability, an opacity range within [0, 1]."""
    if isinstance(params, DraemParams):
        k, p, (low, high) = params.score_smoothing, params.rotation_probability, params.beta
        for ok, key, why in ((k == 0 or (k > 0 and k % 2 == 1), "score_smoothing", "an odd window: 21 (official) or 0"),
                             (0.0 <= p <= 1.0, "rotation_probability", "a probability (official 0.3)"),
                             (0.0 <= low <= high <= 1.0, "beta", "an opacity range within [0, 1] (official [0.2, 1.0])")):
            if not ok:
                raise ConfigError(f"models[{name}].params.{key}: {getattr(params, key)!r} is not {why}")


def _without_added(section: dict[str, Any]) -> dict[str, Any]:
    """A config section without the ADDED_DEFAULTS fields that are at their default."""
    return {k: v for k, v in section.items() if not (k in ADDED_DEFAULTS and v == ADDED_DEFAULTS[k])}


def load_experiment(path: Path | str) -> Experiment:
    """Read and strictly validate an experiment file."""
    experiment = load_yaml(path, Experiment, "params file (see params/experiments/ for examples)", _check_semantics)
    resolved = [dataclasses.replace(d, root=registry.resolve_root(d.kind, d.root)) for d in experiment.datasets]
    return dataclasses.replace(experiment, datasets=resolved, source=str(path))


def _check_semantics(exp: Experiment) -> None:
    """Checks beyond types: unique names, non-empty lists, sane ranges, per-model params."""
    for what, names in (("models", [m.name for m in exp.models]), ("datasets", [d.name for d in exp.datasets])):
        if not names:
            raise ConfigError(f"'{what}' is empty: list at least one")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"'{what}' has duplicate names {dupes}: give each a unique name")
    for model in exp.models:
        if model.kind == "efficientad" and model.train.batch_size != 1:
            raise ConfigError(f"models[{model.name}].train.batch_size: EfficientAD trains with batch size 1; set it to 1")
        params = model.settings
        check_params(model.name, params)
        if isinstance(params, EfficientAdParams) and params.distill is not None and params.teacher != "distilled":
            raise ConfigError(f"models[{model.name}].params.distill is set but teacher is {params.teacher!r}: "
                              "set teacher to 'distilled' or remove distill")
        minimum = MIN_IMAGE_SIZE.get(model.kind, 1)
        if model.image_size < minimum:
            raise ConfigError(f"models[{model.name}].image_size: {model.image_size} is below {model.kind}'s minimum "
                              f"of {minimum} px; set image_size to at least that")
        if model.train.max_steps <= 0 and model.train.max_epochs <= 0 and model.kind != "anomalib":
            raise ConfigError(f"models[{model.name}].train: set max_steps or max_epochs to a positive number")
    for ds in exp.datasets:
        if not ds.categories:
            raise ConfigError(f"datasets[{ds.name}].categories is empty: list at least one category")
        known = registry.info(ds.kind).categories
        unknown = [c for c in ds.categories if known and c not in known]
        if unknown:
            raise ConfigError(f"datasets[{ds.name}].categories: unknown {ds.kind} category {unknown[0]!r}; "
                              f"known: {list(known)}")
        if not 0.0 < ds.train_ratio <= 1.0:
            raise ConfigError(f"datasets[{ds.name}].train_ratio must lie in (0, 1], got {ds.train_ratio}")
    if not exp.seeds:
        raise ConfigError("'seeds' is empty: list at least one seed, e.g. [0]")
    if not 0.0 < exp.evaluation.val_ratio < 1.0:
        raise ConfigError("evaluation.val_ratio must lie strictly between 0 and 1")


def expand_runs(exp: Experiment) -> list[RunSpec]:
    """The grid in a stable order: model, dataset, category, seed."""
    runs = []
    for model, ds in itertools.product(exp.models, exp.datasets):
        for category, seed in itertools.product(ds.categories, exp.seeds):
            runs.append(RunSpec(exp.name, exp.source, model, ds, category, seed, exp.device, exp.evaluation, exp.speed))
    return runs


def find_run(exp: Experiment, model: str, dataset: str, category: str, seed: int) -> RunSpec:
    """The run of the grid with these coordinates, or a ConfigError naming the valid choices."""
    runs = expand_runs(exp)
    for run in runs:
        if (run.model.name, run.dataset.name, run.category, run.seed) == (model, dataset, category, seed):
            return run
    models = sorted({r.model.name for r in runs})
    datasets = {d.name: d.categories for d in exp.datasets}
    raise ConfigError(
        f"{exp.source}: no run model={model!r} dataset={dataset!r} category={category!r} seed={seed}; "
        f"models: {models}, datasets/categories: {datasets}, seeds: {exp.seeds}"
    )
