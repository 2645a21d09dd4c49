"""Dataset registry: the datasets of the study and a user's own folder, and where to get each.

One `DatasetInfo` per dataset kind: its categories, on-disk layout, expected image counts, the
environment variable and default folder its root comes from, and where to download it. This module
uses only the standard library (a leaf that `config` reads); `vadbench.data.checks` validates roots on disk.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

#: (train good, test good, test defect) per category, as published by the dataset authors.
Counts = tuple[int, int, int]

MVTEC_AD_COUNTS: dict[str, Counts] = {
    "bottle": (209, 20, 63), "cable": (224, 58, 92), "capsule": (219, 23, 109), "carpet": (280, 28, 89),
    "grid": (264, 21, 57), "hazelnut": (391, 40, 70), "leather": (245, 32, 92), "metal_nut": (220, 22, 93),
    "pill": (267, 26, 141), "screw": (320, 41, 119), "tile": (230, 33, 84), "toothbrush": (60, 12, 30),
    "transistor": (213, 60, 40), "wood": (247, 19, 60), "zipper": (240, 32, 119),
}
#: VisA's official 1cls split (split_csv/1cls.csv): train normal, test normal, test anomaly.
VISA_COUNTS: dict[str, Counts] = {
    "candle": (900, 100, 100), "capsules": (542, 60, 100), "cashew": (450, 50, 100),
    "chewinggum": (453, 50, 100), "fryum": (450, 50, 100), "macaroni1": (900, 100, 100),
    "macaroni2": (900, 100, 100), "pcb1": (904, 100, 100), "pcb2": (901, 100, 100),
    "pcb3": (905, 101, 100), "pcb4": (904, 101, 100), "pipe_fryum": (450, 50, 100),
}
WFDD_CATEGORIES = ("grey_cloth", "grid_cloth", "yellow_cloth", "pink_flower")


@dataclass(frozen=True)
class DatasetInfo:
    """What vadbench knows about one dataset kind."""

    kind: str
    title: str
    layout: str  # "mvtec" (<cat>/train/good ...), "visa" (raw release + split csv), "folder" (<cat>/good, defect)
    categories: tuple[str, ...]  # empty: any category (the user's folders)
    expected: dict[str, Counts] = field(default_factory=dict)
    strict_counts: bool = False  # a count mismatch is an error (else information)
    env_var: str = ""
    default_root: str = ""
    download: str = ""
    kaggle: str = ""
    unpack: str = ""


REGISTRY: dict[str, DatasetInfo] = {
    "demo": DatasetInfo(
        kind="demo", title="embedded demo (scikit-image textures)", layout="mvtec",
        categories=(), env_var="VADBENCH_DEMO_ROOT", default_root="outputs/data/demo",
        download="built offline by `vadbench demo-data` (nothing to download)",
        unpack="run `vadbench demo-data` (or `make demo-data`) to build it",
    ),
    "mvtec_ad": DatasetInfo(
        kind="mvtec_ad", title="MVTec AD", layout="mvtec", categories=tuple(MVTEC_AD_COUNTS),
        expected=MVTEC_AD_COUNTS, strict_counts=True, env_var="VADBENCH_MVTEC_AD_ROOT",
        default_root="datasets/mvtec_ad",
        download="https://www.mvtec.com/company/research/datasets/mvtec-ad (mvtec_anomaly_detection.tar.xz)",
        kaggle="ipythonx/mvtec-ad (a community mirror: attach it, then set the root to /kaggle/input/mvtec-ad)",
        unpack="unpack so that <root>/bottle/train/good/000.png exists (root = the folder holding the 15 categories)",
    ),
    "visa": DatasetInfo(
        kind="visa", title="VisA (1cls split)", layout="visa", categories=tuple(VISA_COUNTS),
        expected=VISA_COUNTS, strict_counts=True, env_var="VADBENCH_VISA_ROOT", default_root="datasets/visa",
        download="https://amazon-visual-anomaly.s3.us-west-2.amazonaws.com/VisA_20220922.tar "
                 "(from https://github.com/amazon-science/spot-diff)",
        kaggle="no mirror verified by us: upload VisA_20220922 as a private Kaggle dataset and mount it; the shard "
               "kernel copies it once to a writable scratch folder and converts it there (not /kaggle/working)",
        unpack="unpack so that <root>/candle/Data/Images/Normal and <root>/split_csv/1cls.csv exist; the first run "
               "converts it to <root>/visa_pytorch/<category>/{train,test,ground_truth} (anomalib's 1cls split)",
    ),
    "wfdd": DatasetInfo(
        kind="wfdd", title="WFDD (Woven Fabric Defect Detection, GLASS, ECCV 2024)", layout="mvtec",
        categories=WFDD_CATEGORIES, env_var="VADBENCH_WFDD_ROOT", default_root="datasets/wfdd",
        download="https://github.com/cqylunlun/GLASS (README, 'Dataset Release': Google Drive link "
                 "https://drive.google.com/file/d/1P8yfNnfoFsb0Lv-HRzkPQ2nD9qsL--Vk)",
        kaggle="no mirror verified by us: upload the WFDD folder as a private Kaggle dataset and attach it",
        unpack="unpack so that <root>/grey_cloth/train/good exists (MVTec-like: <cat>/train/good, "
               "<cat>/test/{good,<defect>}, <cat>/ground_truth/<defect>)",
    ),
    "folder": DatasetInfo(
        kind="folder", title="your own images", layout="folder", categories=(),
        env_var="VADBENCH_FOLDER_ROOT", default_root="datasets/folder",
        download="your own images",
        unpack="put each category in <root>/<category>/ with good/ (normal images), defect/ (anomalous images) "
               "and optionally mask/ (a binary mask per defect image, same file stem, same size) and test_good/ "
               "(normal test images; without it 20 % of good/ is held out for testing, seeded)",
    ),
}
DATASET_KINDS = tuple(REGISTRY)


def info(kind: str) -> DatasetInfo:
    """The registry entry of a kind (KeyError names the known kinds)."""
    if kind not in REGISTRY:
        raise KeyError(f"unknown dataset kind {kind!r}; known: {list(REGISTRY)}")
    return REGISTRY[kind]


def resolve_root(kind: str, root: str | None) -> str:
    """A dataset root: as given in params, else from the kind's environment variable, else its default."""
    if root:
        return root
    entry = info(kind)
    return os.environ.get(entry.env_var) or entry.default_root


def where_text(kind: str) -> str:
    """Where to download a dataset and the exact folder to unpack it into (for `vadbench data where`)."""
    entry = info(kind)
    root = resolve_root(kind, None)
    source = "from $" + entry.env_var if os.environ.get(entry.env_var) else "default; set $" + entry.env_var
    lines = [
        f"{entry.title} ({kind})",
        f"  download: {entry.download}",
    ]
    if entry.kaggle:
        lines.append(f"  kaggle:   {entry.kaggle}")
    lines += [
        f"  root:     {root} ({source} or datasets[].root in the params file to change it)",
        f"  unpack:   {entry.unpack}",
    ]
    if entry.categories:
        lines.append(f"  categories ({len(entry.categories)}): {', '.join(entry.categories)}")
    lines.append(f"  then:     vadbench data check {kind}" + ("" if kind == "demo" else " [--root PATH]"))
    return "\n".join(lines)

