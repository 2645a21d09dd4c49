"""Run an experiment as Kaggle kernels: build shard folders, push them, poll them, pull their records home.

`vadbench kaggle push X.yaml` splits the run grid into shards (`--shard-by model,dataset` by default),
writes one kernel folder per shard (kernel-metadata.json + a notebook generated from
notebooks/kaggle_shard.ipynb) and a code folder (a wheel of this package and train_evaluate.ipynb)
that is pushed as a private Kaggle dataset, then pushes the kernels. Each kernel runs
`vadbench.launch.runner.run_experiment` on its shard, i.e. the same papermill/train_evaluate path as local runs.
`status` lists the kernels' states; `pull` downloads their outputs and merges the records into the runs
root (idempotent; a record that differs from a local one is reported, never overwritten).

Credentials: only the kaggle package reads them (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY);
this module reads nothing but the user name, and writes no credential anywhere. All network access
goes through `kaggle_api.KaggleApiBoundary`, which tests replace by a fake.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from vadbench import records
from vadbench.config import (
    DistillParams,
    Experiment,
    RunSpec,
    expand_runs,
    load_experiment,
)
from vadbench.errors import ConfigError, KaggleSetupError
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.kaggle_api import KaggleApi, KaggleApiBoundary
from vadbench.models import zoo
from vadbench.paths import git_commit, notebooks_dir
from vadbench.strict import load_yaml

log = logging.getLogger(__name__)

SHARD_KEYS = ("model", "dataset", "category", "seed")
TEMPLATE = "kaggle_shard.ipynb"
MANIFEST = "shards.json"
CODE_DIR = "code"
NO_OWNER = "your-kaggle-username"


@dataclass(frozen=True)
class KaggleSpec:
    """params/kaggle/kaggle.yaml: where and how shards run on Kaggle."""

    owner: str = ""  # Kaggle user name; "" = the one of your credentials
    accelerator: str = "NvidiaTeslaT4"  # kaggle CLI machine shape: NvidiaTeslaT4, NvidiaTeslaP100 (retired), ...
    enable_gpu: bool = True
    enable_internet: bool = True  # needed for pip_packages; turn off only with a wheelhouse dataset mounted
    is_private: bool = True
    kernel_prefix: str = "vadbench"
    code_dataset: str = "vadbench-code"  # your Kaggle dataset holding the package wheel (push creates/updates it)
    pip_packages: list[str] = field(default_factory=lambda: ["anomalib==2.7.0", "papermill>=2.6"])
    mounts: dict[str, str] = field(default_factory=dict)  # local path in the params -> "owner/dataset[/sub/dir]"
    timeout_s: int = 43200  # Kaggle's 12 h session limit
    workers: int = 1  # runs at once inside a kernel (GPUs of the accelerator, e.g. 2 on "T4 x2")


@dataclass
class Shard:
    """One kernel's runs."""

    slug: str
    kernel_id: str
    runs: list[tuple[str, str, str, int]]
    folder: str


@dataclass
class PullResult:
    """What a pull did."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)


def load_kaggle_spec(path: Path | str | None) -> KaggleSpec:
    """Read the Kaggle params strictly; no file means the defaults."""
    if path is None:
        return KaggleSpec()
    return load_yaml(path, KaggleSpec, "Kaggle params file (see params/kaggle/kaggle.yaml)")


# ---- shards ----------------------------------------------------------------------------------

def slugify(text: str) -> str:
    """Kaggle-style slug: lowercase letters, digits and single hyphens."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def plan_shards(exp: Experiment, shard_by: list[str], owner: str, prefix: str) -> dict[str, list[RunSpec]]:
    """Group the grid's runs by the shard keys; slug -> runs (grid order kept)."""
    unknown = [k for k in shard_by if k not in SHARD_KEYS]
    if unknown:
        raise ConfigError(f"--shard-by {unknown[0]!r} is not one of {list(SHARD_KEYS)}")
    shards: dict[str, list[RunSpec]] = {}
    for run in expand_runs(exp):
        values = {"model": run.model.name, "dataset": run.dataset.name, "category": run.category,
                  "seed": f"seed{run.seed}"}
        slug = slugify("-".join([prefix, exp.name, *(values[k] for k in shard_by)]))
        if len(slug) > 50:
            raise ConfigError(f"kernel slug {slug!r} is over Kaggle's 50 characters: shorten names or kernel_prefix")
        shards.setdefault(slug, []).append(run)
    return shards


def required_paths(exp: Experiment) -> list[str]:
    """Every input path the experiment reads (dataset roots, anomaly sources, penalty images, teacher files)."""
    paths = [ds.root for ds in exp.datasets]
    for model in exp.models:
        params = model.settings
        if model.kind == "draem" and params.anomaly_source != "perlin":
            paths.append(params.anomaly_source)
        if model.kind == "efficientad":
            paths.append(params.imagenet_dir)
            if params.teacher == "anomalib":
                raise KaggleSetupError(f"models[{model.name}].params.teacher 'anomalib' reads a local cache: upload "
                                       "pretrained_teacher_*.pth as a Kaggle dataset, mount it and give its path")
            if params.teacher == "distilled":  # built in the kernel from these images (vadbench.distill)
                paths.append((params.distill or DistillParams()).images)
            elif params.teacher != "random":
                paths.append(params.teacher)
        if model.kind == "anomalib":  # e.g. Glass's anomaly_source_path
            paths.extend(zoo.input_paths(params).values())
    return paths


def check_mounts(exp: Experiment, mounts: dict[str, str]) -> None:
    """Raise KaggleSetupError unless every input path lies under a relative mount."""
    for local in mounts:
        if Path(local).is_absolute() or ".." in Path(local).parts:
            raise KaggleSetupError(f"mount {local!r}: use a path relative to the project root, as in the params")
    for path in required_paths(exp):
        if not any(_under(path, local) for local in mounts):
            raise KaggleSetupError(f"{path}: no Kaggle dataset mounted for it; add `mounts: {{{path}: "
                                   "owner/dataset-slug}` to the Kaggle params (see params/kaggle/kaggle.yaml)")


def _under(path: str, root: str) -> bool:
    p, r = Path(path).parts, Path(root).parts
    return p[:len(r)] == r


def dataset_sources(mounts: dict[str, str], owner: str, code_dataset: str) -> list[str]:
    """Kaggle dataset ids the kernel needs: the code dataset, then each mount's dataset."""
    sources = [f"{owner}/{code_dataset}"]
    for target in mounts.values():
        parts = target.split("/")
        if len(parts) < 2 or not all(parts[:2]):
            raise KaggleSetupError(f"mount target {target!r}: write it as owner/dataset-slug[/sub/dir]")
        ident = "/".join(parts[:2])
        if ident not in sources:
            sources.append(ident)
    return sources


# ---- folders ---------------------------------------------------------------------------------

def kernel_metadata(slug: str, owner: str, spec: KaggleSpec, notebook: str) -> dict[str, Any]:
    """kernel-metadata.json of one shard."""
    return {
        "id": f"{owner}/{slug}", "title": slug, "code_file": notebook, "language": "python",
        "kernel_type": "notebook", "is_private": spec.is_private, "enable_gpu": spec.enable_gpu,
        "enable_tpu": False, "enable_internet": spec.enable_internet,
        "dataset_sources": dataset_sources(spec.mounts, owner, spec.code_dataset),
        "competition_sources": [], "kernel_sources": [], "model_sources": [],
        "machine_shape": spec.accelerator,
    }


def shard_notebook(params: dict[str, Any]) -> nbformat.NotebookNode:
    """The template notebook with its parameters cell replaced by these literals (same names and order)."""
    nb = nbformat.read(notebooks_dir() / TEMPLATE, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    lines = []
    for line in cell.source.splitlines():
        name = line.split(":", 1)[0].strip()
        if name in params:
            annotation = line.split(":", 1)[1].split("=", 1)[0].strip()
            lines.append(f"{name}: {annotation} = {params[name]!r}")
        else:
            lines.append(line)
    missing = set(params) - {line.split(":", 1)[0].strip() for line in lines}
    if missing:
        raise RuntimeError(f"{TEMPLATE} has no parameters {sorted(missing)}")
    cell.source = "\n".join(lines)
    return nb


def build_code_folder(folder: Path, owner: str, spec: KaggleSpec) -> Path:
    """The code dataset folder: dataset-metadata.json, the vadbench wheel, train_evaluate.ipynb."""
    from vadbench.launch.wheel import build_wheel

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    wheel = build_wheel(folder)
    shutil.copy2(notebooks_dir() / NOTEBOOK, folder / NOTEBOOK)
    meta = {"title": spec.code_dataset, "id": f"{owner}/{spec.code_dataset}",
            "licenses": [{"name": "Apache-2.0"}], "isPrivate": True}
    (folder / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return wheel


def write_shards(params_file: Path | str, out_root: Path, spec: KaggleSpec, shard_by: list[str], owner: str
                 ) -> list[Shard]:
    """Write the code folder and one kernel folder per shard, plus the manifest; return the shards."""

    exp = load_experiment(params_file)
    check_mounts(exp, spec.mounts)
    exp_root = out_root / exp.name
    wheel = build_code_folder(out_root / CODE_DIR, owner, spec)
    experiment_yaml = Path(params_file).read_text(encoding="utf-8")
    shards = []
    for slug, runs in plan_shards(exp, shard_by, owner, spec.kernel_prefix).items():
        folder = exp_root / "kernels" / slug
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        cells = [[r.model.name, r.dataset.name, r.category, r.seed] for r in runs]
        nb = shard_notebook({
            "shard": slug, "experiment_path": str(params_file), "experiment_yaml": experiment_yaml, "runs": cells,
            "code_dataset": spec.code_dataset, "wheel": wheel.name, "pip_packages": list(spec.pip_packages),
            "mounts": dict(spec.mounts), "git_commit": git_commit(), "workers": spec.workers,
        })
        nbformat.write(nb, folder / f"{slug}.ipynb")
        meta = kernel_metadata(slug, owner, spec, f"{slug}.ipynb")
        (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        shards.append(Shard(slug, meta["id"], [tuple(c) for c in cells], str(folder)))
    manifest = {"experiment": exp.name, "params_file": str(params_file), "shard_by": shard_by,
                "accelerator": spec.accelerator, "shards": [dataclasses.asdict(s) for s in shards]}
    records.write_json_atomic(exp_root / MANIFEST, manifest)
    log.info("%d shard(s) of %s written under %s", len(shards), exp.name, exp_root)
    return shards


# ---- push / status / pull --------------------------------------------------------------------

def resolve_owner(spec: KaggleSpec, api: KaggleApi | None) -> str:
    """The Kaggle user: params, else KAGGLE_USERNAME, else the API's credentials, else a placeholder (dry runs)."""
    owner = spec.owner or os.environ.get("KAGGLE_USERNAME") or (api.username() if api else None)
    return owner or NO_OWNER


def push(params_file: Path | str, out_root: Path | str = "outputs/kaggle", kaggle_params: Path | str | None = None,
         shard_by: list[str] | None = None, accelerator: str | None = None, dry_run: bool = False,
         api: KaggleApi | None = None) -> list[Shard]:
    """Write the folders and (unless dry_run) push the code dataset and every shard's kernel."""
    spec = load_kaggle_spec(kaggle_params)
    if accelerator:
        spec = dataclasses.replace(spec, accelerator=accelerator)
    if not dry_run and api is None:
        api = KaggleApiBoundary()
    owner = resolve_owner(spec, api)
    if not dry_run and owner == NO_OWNER:
        raise KaggleSetupError("no Kaggle user name: set owner in the Kaggle params or KAGGLE_USERNAME")
    shards = write_shards(params_file, Path(out_root), spec, shard_by or ["model", "dataset"], owner)
    if dry_run:
        for s in shards:
            log.info("dry run: %s (%d runs) in %s", s.kernel_id, len(s.runs), s.folder)
        return shards
    code = Path(out_root) / CODE_DIR
    dataset_id = f"{owner}/{spec.code_dataset}"
    if api.dataset_exists(dataset_id):
        api.version_dataset(code, f"vadbench code for {Path(params_file).name}")
    else:
        api.create_dataset(code)
    for s in shards:
        url = api.push_kernel(Path(s.folder), spec.accelerator, spec.timeout_s)
        log.info("pushed %s (%d runs): %s", s.kernel_id, len(s.runs), url)
    return shards


def load_manifests(out_root: Path | str, experiment: str | None = None) -> list[dict[str, Any]]:
    """The shard manifests under out_root (one experiment's, or all)."""
    paths = sorted(Path(out_root).glob(f"{experiment or '*'}/{MANIFEST}"))
    if not paths:
        raise KaggleSetupError(f"no Kaggle shards under {out_root}: run `vadbench kaggle push X.yaml` first")
    return [json.loads(p.read_text()) for p in paths]


def status(out_root: Path | str = "outputs/kaggle", experiment: str | None = None,
           api: KaggleApi | None = None) -> list[tuple[str, str, str]]:
    """(kernel id, state, message) of every shard's kernel."""
    api = api or KaggleApiBoundary()
    rows = []
    for manifest in load_manifests(out_root, experiment):
        for shard in manifest["shards"]:
            state, message = api.kernel_status(shard["kernel_id"])
            rows.append((shard["kernel_id"], state, message))
            log.info("%-60s %-10s %s", shard["kernel_id"], state, message)
    return rows


def pull(out_root: Path | str = "outputs/kaggle", runs_root: Path | str = "outputs/runs",
         experiment: str | None = None, api: KaggleApi | None = None) -> PullResult:
    """Download finished kernels' outputs and merge their run folders into runs_root."""
    api = api or KaggleApiBoundary()
    result = PullResult()
    for manifest in load_manifests(out_root, experiment):
        for shard in manifest["shards"]:
            state, _ = api.kernel_status(shard["kernel_id"])
            if state not in ("complete", "error"):  # an errored kernel may still hold finished runs
                result.not_ready.append(f"{shard['kernel_id']} ({state})")
                continue
            dest = Path(out_root) / manifest["experiment"] / "downloads" / shard["slug"]
            api.download_output(shard["kernel_id"], dest)
            merge_runs(dest / "runs", Path(runs_root), result)
    log.info("pull: %d added, %d already there, %d conflicts, %d kernels not finished", len(result.added),
             len(result.unchanged), len(result.conflicts), len(result.not_ready))
    for item in result.conflicts:
        log.warning("conflict, local record kept: %s", item)
    return result


def merge_runs(source: Path, runs_root: Path, result: PullResult) -> None:
    """Copy each downloaded run folder whose record is new; same record = unchanged; different = conflict."""
    for record_path in records.find_records(source):
        run_dir = record_path.parent
        rel = run_dir.relative_to(source)
        target = runs_root / rel
        if (target / records.RECORD_FILE).is_file():
            same = _same_record(record_path, target / records.RECORD_FILE)
            (result.unchanged if same else result.conflicts).append(str(rel))
            continue
        _copy_run(run_dir, target)
        result.added.append(str(rel))


def _same_record(a: Path, b: Path) -> bool:
    ra, rb = records.read_record(a), records.read_record(b)
    ra.pop("_path", None), rb.pop("_path", None)
    return ra == rb


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a run folder, record.json last (atomically), so a half copy is never a finished run."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name != records.RECORD_FILE:
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / path.relative_to(src))
    records.write_json_atomic(dst / records.RECORD_FILE, json.loads((src / records.RECORD_FILE).read_text()))
