"""Any anomalib image model by class name (`kind: anomalib`): which run offline and how, strict init_args, build.

Every image model anomalib exports has an entry in CATALOG saying how it gets its weights without a download:

* ``backbone``: takes a ``backbone`` as a module: one of our local pretrained backbones is passed in
  (`vadbench.models.backbones`; ``mobilenet_v2`` by default, fully offline), with layers chosen for it;
* ``random``: its backbone is built by name from timm: it runs with random weights (``pre_trained: false``,
  recorded in ``training.backbone``) unless params say ``pre_trained: true``; then timm's pretrained weights must be
  in the Hugging Face cache already (``vadbench fetch-backbone <arch> --source timm``) and are read from there only,
  never downloaded; the record names the file and its sha256;
* ``none``: it has no pretrained part;
* ``hub``: it loads torchvision ImageNet weights of a fixed architecture, which must already be in the torch
  hub cache (``vadbench fetch-backbone <arch>``); a missing file is an error, never a download;
* ``refused``: it cannot run offline (a foundation model or vision-language model from a hub), or has
  its own kind here; the reason is the error message.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadbench.config import AnomalibParams, DistillParams, EfficientAdParams, ModelSpec
from vadbench.errors import ConfigError, InputMissingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """How one anomalib class runs here: its weights route, default layers on MobileNetV2, a note."""

    weights: str  # backbone | random | none | hub | refused
    note: str = ""  # for `refused`: why; otherwise what to know
    layers: tuple[str, ...] = ()  # default feature layers on mobilenet_v2 (`layer` for single-layer models)
    hub_arg: str = ""  # for `hub`: the init argument naming the torchvision architecture ...
    hub_arch: str = ""  # ... or the architecture it always loads
    one_pass: bool = False  # anomalib's trainer arguments set max_epochs: train may be left out
    no_crop: bool = False  # anomalib's pre-processor centre-crops: resize and normalise only (maps must cover masks)


_FOUNDATION = "needs a pretrained foundation-model backbone ({}) downloaded from a hub; random weights would not be this method"
_VLM = "a vision-language model ({}) downloaded from a hub or called through an API"
_IMAGE_ONLY = ("scores images only (its output has no anomaly map), while every run here computes pixel metrics "
               "and a pixel threshold from one")
_OWN_KIND = "has its own kind with offline inputs: use `kind: {}`"
_MB3 = ("features.3", "features.6", "features.13")

CATALOG: dict[str, Entry] = {
    "Cflow": Entry("backbone", layers=("features.6", "features.13")),
    "Dfm": Entry("backbone", layers=("features.13",), one_pass=True),
    "Fre": Entry("backbone", layers=("features.13",), note="input_dim is computed from the backbone when not given"),
    "Supersimplenet": Entry("backbone", layers=("features.6", "features.13")),
    "Glass": Entry("backbone", layers=("features.6", "features.13"), note="input_shape follows image_size"),
    "MHPatchcore": Entry("backbone", layers=("features.6", "features.13"), one_pass=True, no_crop=True,
                         note="pre-processing without anomalib's 224-px centre crop, so maps align with masks"),
    "Patchflow": Entry("random", note="timm backbone by name, features by index"),
    "Stfpm": Entry("backbone", layers=_MB3, note="teacher: the local backbone; student: the same architecture, random"),
    "Fastflow": Entry("random", note="timm backbone by name"),
    "ReverseDistillation": Entry("random", note="timm encoder by name, decoder built for that name"),
    "Dfkde": Entry("refused", _IMAGE_ONLY),
    "Ganomaly": Entry("refused", _IMAGE_ONLY),
    "Cfa": Entry("hub", hub_arg="backbone"),
    "Csflow": Entry("hub", hub_arch="efficientnet_b5"),
    "UniNet": Entry("hub", hub_arg="teacher_backbone"),
    "Draem": Entry("refused", _OWN_KIND.format("draem")),
    "EfficientAd": Entry("refused", _OWN_KIND.format("efficientad")),
    "Padim": Entry("refused", _OWN_KIND.format("padim")),
    "Patchcore": Entry("refused", _OWN_KIND.format("patchcore")),
    "AnomalyDINO": Entry("refused", _FOUNDATION.format("DINOv2")),
    "AnomalyVFM": Entry("refused", _FOUNDATION.format("a vision foundation model")),
    "CFM": Entry("refused", _FOUNDATION.format("DINO ViT-B/8 and Point-MAE")),
    "Dinomaly": Entry("refused", _FOUNDATION.format("DINOv2 ViT")),
    "FoundAD": Entry("refused", _FOUNDATION.format("DINOv2 ViT")),
    "GeneralAD": Entry("refused", _FOUNDATION.format("DINOv2 ViT-L")),
    "InpFormer": Entry("refused", _FOUNDATION.format("DINOv2 ViT")),
    "L2BT": Entry("refused", _FOUNDATION.format("DINO ViT")),
    "Rad": Entry("refused", _FOUNDATION.format("DINOv3 ViT")),
    "SuperADD": Entry("refused", _FOUNDATION.format("DINOv3 ViT-H")),
    "Uflow": Entry("refused", "its CaiT (or timm ResNet) feature extractor always loads pretrained weights from the "
                              "Hugging Face hub; it has no pre_trained switch"),
    "Dsr": Entry("refused", "loads its pretrained VQ-VAE weights, downloaded by anomalib; it has no switch to skip them"),
    "VlmAd": Entry("refused", _VLM.format("LLaVA, GPT-4o, Qwen")),
    "WinClip": Entry("refused", _VLM.format("CLIP")),
}


def entry(class_name: str) -> Entry:
    """The catalogue entry of an anomalib class; ConfigError for an unknown or refused class."""
    import anomalib.models.image as image_models

    exported = sorted(image_models.__all__)
    if class_name not in exported:
        raise ConfigError(f"anomalib has no image model {class_name!r}; anomalib {_version()} exports: "
                          f"{', '.join(exported)}")
    if class_name not in CATALOG:
        raise ConfigError(f"anomalib model {class_name!r} is not vetted for offline runs yet "
                          f"(vadbench.models.zoo.CATALOG); supported: {', '.join(supported())}")
    found = CATALOG[class_name]
    if found.weights == "refused":
        raise ConfigError(f"anomalib model {class_name!r} cannot run here: {found.note}. "
                          f"Runnable offline: {', '.join(supported())}")
    return found


def supported() -> list[str]:
    """The anomalib class names that `kind: anomalib` runs."""
    return sorted(name for name, e in CATALOG.items() if e.weights != "refused")


def model_class(class_name: str) -> type:
    """The anomalib class of a name (after `entry` accepted it)."""
    import anomalib.models.image as image_models

    return getattr(image_models, class_name)


#: Constructor arguments vadbench sets itself (evaluation, pre-processing and post-processing are ours).
OURS = ("pre_processor", "post_processor", "evaluator", "visualizer")


def allowed_args(cls: type) -> list[str]:
    """The keyword arguments of the class's constructor that params may set."""
    names = inspect.signature(cls.__init__).parameters
    return sorted(n for n, p in names.items() if n != "self" and n not in OURS
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_args(name: str, params: AnomalibParams) -> None:
    """Raise ConfigError for init_args the class does not take, or that would download weights."""
    found = entry(params.class_name)
    allowed = allowed_args(model_class(params.class_name))
    unknown = sorted(set(params.init_args) - set(allowed))
    if unknown:
        raise ConfigError(f"models[{name}].params.init_args: {params.class_name} takes no argument {unknown[0]!r}; "
                          f"allowed: {allowed}")
    if found.weights == "backbone" and params.init_args.get("pre_trained") is True:
        raise ConfigError(f"models[{name}].params.init_args.pre_trained: true would download {params.class_name}'s "
                          "weights from a hub; vadbench never downloads. Leave it out (the local backbone is pretrained)")


def check_model(spec: ModelSpec) -> None:
    """Before training: class, init_args, training budget and weight files; ConfigError / InputMissingError."""
    params = spec.settings
    check_args(spec.name, params)
    found = CATALOG[params.class_name]
    if not found.one_pass and spec.train.max_steps <= 0 and spec.train.max_epochs <= 0:
        raise ConfigError(f"models[{spec.name}].train: anomalib sets no training length for {params.class_name}; "
                          "set max_steps or max_epochs")
    for path in input_paths(params).values():
        _require_folder(params.class_name, path)
    if found.weights == "backbone":
        from vadbench.models import backbones

        backbones.parse(params.init_args.get("backbone", "mobilenet_v2"))
    elif found.weights == "hub":
        required_hub_file(params)
    elif found.weights == "random" and params.init_args.get("pre_trained") is True:
        from vadbench.models import backbones

        backbones.timm_file(_timm_arch(params))


def _timm_arch(params: AnomalibParams) -> str:
    """The timm backbone name a `random` model builds."""
    return params.init_args.get("backbone", _default_arg(params.class_name, "backbone"))


def hub_weights(spec: ModelSpec) -> list[str]:
    """The hub weights a model of any kind loads, as `vadbench fetch-backbone` sources them (`torchvision:<arch>`,
    `timm:<arch>`); local files and the offline MobileNetV2 are not listed."""
    params = spec.settings
    if isinstance(params, AnomalibParams):
        found = entry(params.class_name)
        if found.weights == "random" and params.init_args.get("pre_trained") is True:
            return [f"timm:{_timm_arch(params)}"]
        if found.weights == "hub":
            return [f"torchvision:{_hub_arch(params)}"]
        names = [params.init_args.get("backbone", "mobilenet_v2")] if found.weights == "backbone" else []
    elif isinstance(params, EfficientAdParams):
        names = [(params.distill or DistillParams()).backbone] if params.teacher == "distilled" else []
    else:
        names = [params.backbone] if hasattr(params, "backbone") else []
    return [f"torchvision:{name}" for name in names if ":" not in name and name != "mobilenet_v2"]


def input_paths(params: AnomalibParams) -> dict[str, str]:
    """The files and folders init_args name (arguments ending in `_path` or `_dir`), which must exist."""
    return {k: v for k, v in sorted(params.init_args.items()) if k.endswith(("_path", "_dir")) and isinstance(v, str)}


def _require_folder(class_name: str, path: str) -> None:
    """An input path must exist: anomalib downloads what is missing (e.g. DTD for Glass), and we never do."""
    if not Path(path).exists():
        raise InputMissingError(f"{class_name}: {path} does not exist (anomalib would download something there). "
                                "Create it, or leave the argument out")


def required_hub_file(params: AnomalibParams) -> str:
    """The torchvision weights file a `hub` model loads, which must be in the torch hub cache already."""
    from vadbench.models import backbones

    arch = _hub_arch(params)
    path = backbones.hub_file(arch)
    if not path.is_file():
        raise InputMissingError(f"{params.class_name} loads torchvision's {arch} ImageNet weights, and {path} is "
                                f"missing; anomalib would download it. Run `vadbench fetch-backbone {arch}` on a "
                                "machine with internet (or copy the file there)")
    return f"{arch} ({path})"


def _hub_arch(params: AnomalibParams) -> str:
    """The torchvision architecture a `hub` model loads."""
    found = CATALOG[params.class_name]
    return found.hub_arch or params.init_args.get(found.hub_arg) or _default_arg(params.class_name, found.hub_arg)


def _default_arg(class_name: str, arg: str) -> Any:
    """The default of a constructor argument of an anomalib class."""
    return inspect.signature(model_class(class_name).__init__).parameters[arg].default


def _version() -> str:
    from importlib.metadata import version

    return version("anomalib")


# ---- build ---------------------------------------------------------------------------------------

def build_zoo_model(spec: ModelSpec, size: tuple[int, int], common: dict[str, Any], seed: int
                    ) -> tuple[Any, dict[str, Any]]:
    """The anomalib module of a `kind: anomalib` model and the facts the record states about its weights."""
    from vadbench.models import backbones

    check_model(spec)
    params = spec.settings
    found, cls = CATALOG[params.class_name], model_class(params.class_name)
    args, facts = dict(params.init_args), ({"input_paths": input_paths(params)} if input_paths(params) else {})
    net = None
    if found.weights == "backbone":
        net, facts["backbone"], facts["layers"] = _local_backbone(cls, found, args)
    elif found.weights == "random" and args.get("pre_trained") is True:
        facts.update(backbones.timm_origin(_timm_arch(params)))
        facts["provenance"] = f"backbone: {facts['backbone']}, {facts['backbone_file']} (sha256 {facts['backbone_sha256']})"
    elif found.weights == "random":
        args["pre_trained"] = False
        arch = _timm_arch(params)
        facts["backbone"] = f"random {arch} (pre_trained: false, seed {seed}) - not the paper's pretrained backbone"
        log.warning("%s runs with a RANDOM backbone (not the paper's pretrained one)", params.class_name)
    elif found.weights == "hub":
        facts["backbone"] = f"pretrained:{required_hub_file(params)}"
    facts.setdefault("provenance", _provenance(params, found, facts))
    if params.class_name == "Glass":
        args.setdefault("input_shape", size)
    with backbones.hub_offline():  # timm reads the Hugging Face cache only: what check() found there
        module = _with_train_overrides(cls, spec)(**args, pre_processor=_pre_processor(cls, found, size), **common)
    _FIXUPS.get(params.class_name, lambda *a: None)(module, params, net, size)
    facts["trainer_arguments"] = {k: v for k, v in module.trainer_arguments.items() if _plain(v)}
    return module, facts


def _provenance(params: AnomalibParams, found: Entry, facts: dict[str, Any]) -> str:
    """The record's line on where the model's weights come from (file and sha256 where pretrained)."""
    from vadbench.models import backbones

    if found.weights == "hub":
        return f"backbone: {backbones.origin(_hub_arch(params))}"
    if found.weights == "backbone":
        return f"backbone: {backbones.origin(params.init_args.get('backbone', 'mobilenet_v2'))}"
    return f"backbone: {facts['backbone']}" if "backbone" in facts else "no pretrained part"


def _local_backbone(cls: type, found: Entry, args: dict[str, Any]) -> tuple[Any, str, list[str]]:
    """Swap the backbone name in args for our locally loaded module; choose MobileNetV2 layers when none are named."""
    from vadbench.models import backbones

    name = args.get("backbone", "mobilenet_v2")
    arch, path = backbones.parse(name)
    key = "layer" if "layer" in allowed_args(cls) else "layers"
    if key not in args and arch == "mobilenet_v2":
        args[key] = found.layers[0] if key == "layer" else list(found.layers)
    args.pop("pre_trained", None)  # a module is used as it is: pretrained
    args["backbone"] = net = backbones.load_backbone(name)
    layers = args.get(key, inspect.signature(cls.__init__).parameters[key].default)
    return net, f"{name} ({path})", [layers] if isinstance(layers, str) else list(layers)


def _pre_processor(cls: type, found: Entry, size: tuple[int, int]) -> Any:
    """anomalib's pre-processor of the class at our image size; without its centre crop where the entry says so."""
    if not found.no_crop:
        return cls.configure_pre_processor(image_size=size)
    from anomalib.pre_processing import PreProcessor
    from torchvision.transforms.v2 import Compose, Normalize, Resize

    imagenet = Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return PreProcessor(transform=Compose([Resize(size, antialias=True), imagenet]))


def _with_train_overrides(cls: type, spec: ModelSpec) -> type:
    """cls, or a subclass whose trainer arguments leave out the budget keys that `train` sets (ours win)."""
    ours = {k for k in ("max_steps", "max_epochs") if getattr(spec.train, k) > 0}
    if not ours & set(_trainer_keys(cls)):
        return cls

    def trainer_arguments(self: Any) -> dict[str, Any]:
        return {k: v for k, v in cls.trainer_arguments.fget(self).items() if k not in ours}

    return type(cls.__name__, (cls,), {"trainer_arguments": property(trainer_arguments), "__module__": cls.__module__})


def _trainer_keys(cls: type) -> list[str]:
    """Budget keys anomalib's trainer arguments of cls may set (read from the catalogue)."""
    return ["max_epochs"] if CATALOG[cls.__name__].one_pass else []


def _plain(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None


def _stfpm_student(module: Any, params: AnomalibParams, net: Any, size: tuple[int, int]) -> None:
    """STFPM's student is the teacher's architecture with random weights (with a module, anomalib would share it)."""
    import copy

    from anomalib.models.components import TimmFeatureExtractor

    student = copy.deepcopy(net)
    for layer in student.modules():
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    student.requires_grad_(True)
    module.model.student_model = TimmFeatureExtractor(backbone=student, layers=module.model.teacher_model.layers,
                                                      requires_grad=True)


def _fre_input_dim(module: Any, params: AnomalibParams, net: Any, size: tuple[int, int]) -> None:
    """FRE's autoencoder width from the backbone's pooled features at this image size, unless init_args sets it."""
    if "input_dim" in params.init_args:
        return
    import torch
    import torch.nn.functional as F
    from anomalib.models.image.fre.torch_model import TiedAE

    model = module.model
    with torch.no_grad():
        features = model.feature_extractor(torch.zeros(1, 3, *size))[model.layer]
        if model.pooling_kernel_size > 1:
            features = F.avg_pool2d(features, kernel_size=model.pooling_kernel_size)
    latent = params.init_args.get("latent_dim", _default_arg("Fre", "latent_dim"))
    model.fre_model = TiedAE(features.numel(), latent)


_FIXUPS = {"Stfpm": _stfpm_student, "Fre": _fre_input_dim}
