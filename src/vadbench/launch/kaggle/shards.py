"""Kaggle shards: kernel names, each shard's inputs (mounted or fetched there), its metadata and notebook.

A shard is one kernel's runs. Its name is `<prefix>-<readable part>-<hash>`: the hash of the experiment
name and the shard's key values makes it stable across pushes and unique, the readable part is cut so
the slug always fits Kaggle's 50 characters. A shard mounts only the datasets its own runs read.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from vadbench.config import DistillParams, Experiment, RunSpec, expand_runs
from vadbench.errors import ConfigError, KaggleSetupError
from vadbench.launch.kaggle.rules import SLUG_MAX, check_dataset_ref, slugify
from vadbench.launch.kaggle.spec import KaggleSpec
from vadbench.launch.parameters import parameterize
from vadbench.paths import notebooks_dir

SHARD_KEYS = ("model", "dataset", "category", "seed")
TEMPLATE = "kaggle_shard.ipynb"
CODE_DIR = "code"


@dataclass
class Shard:
    """One kernel's runs."""

    slug: str
    kernel_id: str
    runs: list[tuple[str, str, str, int]]
    folder: str


def shard_slug(prefix: str, experiment: str, values: list[str]) -> str:
    """`<prefix>-<experiment>-<values>` cut to fit, plus an 8-hex hash of experiment and values: stable and unique."""
    digest = hashlib.sha1("|".join([experiment, *values]).encode()).hexdigest()[:8]
    readable = slugify("-".join([prefix, experiment, *values]))[:SLUG_MAX - 9].strip("-")
    return f"{readable}-{digest}"


def plan_shards(exp: Experiment, shard_by: list[str], prefix: str) -> dict[str, list[RunSpec]]:
    """Group the grid's runs by the shard keys; slug -> runs (grid order kept)."""
    unknown = [k for k in shard_by if k not in SHARD_KEYS]
    if unknown:
        raise ConfigError(f"--shard-by {unknown[0]!r} is not one of {list(SHARD_KEYS)}")
    shards: dict[str, list[RunSpec]] = {}
    for run in expand_runs(exp):
        values = {"model": run.model.name, "dataset": run.dataset.name, "category": run.category,
                  "seed": f"seed{run.seed}"}
        shards.setdefault(shard_slug(prefix, exp.name, [values[k] for k in shard_by]), []).append(run)
    return shards


# ---- inputs: mounted, or fetched in the kernel by anomalib's own download code --------------------

@dataclass(frozen=True)
class ShardInputs:
    """What a shard reads: mounted paths (local -> owner/dataset[/sub]) and inputs the kernel fetches."""

    mounts: dict[str, str]
    fetch: list[str]  # "dtd:<path>", "imagenette:<path>", "teacher:<size>"
    teacher_weights: str


def shard_inputs(runs: list[RunSpec], spec: KaggleSpec) -> ShardInputs:
    """The shard's inputs; KaggleSetupError names an input that is neither mounted nor fetchable."""
    for local in spec.mounts:  # a dataset root outside the project is given (and mounted) as an absolute path
        if ".." in Path(local).parts:
            raise KaggleSetupError(f"mount {local!r}: write the path as the params do, without '..'")
    mounts: dict[str, str] = {}
    fetch: list[str] = []
    teacher = ""
    for path, kind in _paths_read(runs):
        local = next((m for m in spec.mounts if _under(path, m)), None)
        if local is not None:
            mounts[local] = spec.mounts[local]
        elif kind == "teacher" and spec.teacher_weights:
            teacher = spec.teacher_weights
        elif kind in ("dtd", "imagenette", "teacher", "backbone") and spec.enable_internet and spec.fetch_inputs:
            fetch.append(f"{kind}:{path}")
        else:
            fix = "mount it, or turn on enable_internet and fetch_inputs" if kind in ("dtd", "imagenette", "teacher",
                                                                                     "backbone") \
                else "mount it"
            key = "teacher_weights: owner/dataset" if kind == "teacher" else f"mounts: {{{path}: owner/dataset-slug}}"
            raise KaggleSetupError(f"{path}: not on Kaggle; {fix} (`{key}` in the Kaggle params, "
                                   "see params/kaggle/kaggle.yaml)")
    for target in [*mounts.values(), *([teacher] if teacher else [])]:
        check_dataset_ref("/".join(target.split("/")[:2]))
    return ShardInputs(mounts, sorted(set(fetch)), teacher)


def _paths_read(runs: list[RunSpec]) -> list[tuple[str, str]]:
    """(path, kind) of every input the runs read: dataset roots, anomaly sources, penalty images, teachers."""
    found: dict[str, str] = {}
    for run in runs:
        found.setdefault(run.dataset.root, "dataset")
        params = run.model.settings
        if run.model.kind == "draem" and params.anomaly_source != "perlin":
            found.setdefault(params.anomaly_source, "dtd")
        if run.model.kind == "efficientad":
            found.setdefault(params.imagenet_dir, "imagenette")
            if params.teacher == "anomalib":
                found.setdefault(params.model_size, "teacher")
            elif params.teacher == "distilled":  # built in the kernel from these images (vadbench.models.distill)
                found.setdefault((params.distill or DistillParams()).images, "images")
            elif params.teacher != "random":
                found.setdefault(params.teacher, "file")
        if run.model.kind == "anomalib":  # e.g. Glass's anomaly_source_path
            from vadbench.models.zoo import input_paths

            for path in input_paths(params).values():
                found.setdefault(path, "file")
        from vadbench.models.zoo import hub_weights  # hub weights, `source:arch`: fetched as fetch-backbone does

        found.update({item: "backbone" for item in hub_weights(run.model)})
    return list(found.items())


def _under(path: str, root: str) -> bool:
    p, r = Path(path).parts, Path(root).parts
    return p[:len(r)] == r


def dataset_sources(inputs: ShardInputs, owner: str, code_dataset: str, code_version: int | None) -> list[str]:
    """Kaggle datasets the kernel attaches: the code dataset (pinned to a version when known), then the inputs'."""
    sources = [f"{owner}/{code_dataset}" + (f"/{code_version}" if code_version else "")]
    for target in [*inputs.mounts.values(), *([inputs.teacher_weights] if inputs.teacher_weights else [])]:
        ident = "/".join(target.split("/")[:2])
        if ident not in sources:
            sources.append(ident)
    return sources


def kernel_metadata(slug: str, owner: str, spec: KaggleSpec, notebook: str, sources: list[str]) -> dict[str, Any]:
    """kernel-metadata.json of one shard."""
    return {
        "id": f"{owner}/{slug}", "title": slug, "code_file": notebook, "language": "python",
        "kernel_type": "notebook", "is_private": spec.is_private, "enable_gpu": spec.enable_gpu,
        "enable_tpu": False, "enable_internet": spec.enable_internet, "dataset_sources": sources,
        "competition_sources": [], "kernel_sources": [], "model_sources": [],
        **({"machine_shape": spec.machine_shape} if spec.machine_shape else {}),
        "docker_image_pinning_type": spec.image_pin,
    }


def shard_parameters(params_file: Path | str, slug: str, cells: list, spec: KaggleSpec, inputs: ShardInputs,
                     code: tuple[str, str, str]) -> dict[str, Any]:
    """The shard notebook's parameters: its runs, the pushed wheel (name, sha256, commit), installs and inputs."""
    wheel, wheel_sha, commit = code
    return {
        "shard": slug, "experiment_path": str(params_file), "experiment_yaml": Path(params_file).read_text("utf-8"),
        "runs": cells, "wheel": wheel, "wheel_sha256": wheel_sha, "git_commit": commit,
        "pip_packages": list(spec.pip_packages), "no_deps_packages": list(spec.no_deps_packages),
        "require_gpu": spec.enable_gpu, "mounts": dict(inputs.mounts), "fetch": list(inputs.fetch),
        "teacher_weights": inputs.teacher_weights, "workers": spec.workers,
        "deadline_s": float(spec.deadline_s), "run_estimate_s": float(spec.run_estimate_s),
    }


def shard_notebook(params: dict[str, Any]) -> nbformat.NotebookNode:
    """The template notebook with this shard's parameter values set (papermill's injected cell)."""
    return parameterize(nbformat.read(notebooks_dir() / TEMPLATE, as_version=4), params)
