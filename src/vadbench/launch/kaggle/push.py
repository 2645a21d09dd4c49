"""Run an experiment as Kaggle kernels: build shard folders, push them, poll them, pull their records home.

`vadbench kaggle push X.yaml` splits the run grid into shards (`--shard-by model,dataset` by default),
writes one kernel folder per shard (kernel-metadata.json + a notebook generated from
notebooks/kaggle_shard.ipynb) and a code folder (a wheel of this package and train_evaluate.ipynb),
pushes the code as a private Kaggle dataset, waits until that version is ready, pins every kernel to it
and pushes the kernels. `--pending` pushes only runs without a finished record in the runs root.
`status` lists the kernels' states and the last pulled run counts; `pull` downloads their outputs and
merges the records into the runs root (idempotent; a differing record is reported, never overwritten);
`logs` prints a kernel's log. All network access goes through `kaggle_api.KaggleApiBoundary`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vadbench import records
from vadbench.config import load_experiment
from vadbench.errors import KaggleSetupError
from vadbench.launch import kaggle_rules as rules
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.kaggle_api import KaggleApi, KaggleApiBoundary, KaggleApiError
from vadbench.launch.kaggle_shards import (
    KaggleSpec,
    ShardInputs,
    dataset_sources,
    kernel_metadata,
    load_kaggle_spec,
    plan_shards,
    shard_inputs,
    shard_notebook,
    training_steps,
)
from vadbench.paths import git_commit, notebooks_dir

log = logging.getLogger(__name__)

MANIFEST = "shards.json"
CODE_DIR = "code"
NO_OWNER = "your-kaggle-username"
STATUS_FILE = "shard_status.json"  # written by the kernel beside runs/: finished, failed, deferred


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


def build_code_folder(folder: Path, owner: str, spec: KaggleSpec) -> tuple[Path, str, str]:
    """The code dataset folder (metadata, wheel, train_evaluate.ipynb); (wheel, its sha256, the commit)."""
    from vadbench.launch.wheel import build_wheel

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    commit = git_commit()
    wheel = build_wheel(folder, commit=commit)
    shutil.copy2(notebooks_dir() / NOTEBOOK, folder / NOTEBOOK)
    meta = {"title": spec.code_dataset, "id": f"{owner}/{spec.code_dataset}", "licenses": [{"name": "other"}],
            "isPrivate": True}
    rules.check_dataset_metadata(meta)
    (folder / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest(), commit


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


def write_shards(params_file: Path | str, out_root: Path, spec: KaggleSpec, shard_by: list[str], owner: str,
                 pending_in: Path | None = None, extra: dict[str, Any] | None = None) -> list[Shard]:
    """Write the code folder and one kernel folder per shard (with runs to do), plus the manifest.

    pending_in: a runs root; runs finished there are left out (shards left empty are not written).
    extra: notebook parameters to override (the rehearsal's).
    """
    exp = load_experiment(params_file)
    exp_root = out_root / exp.name
    planned = plan_shards(exp, shard_by, spec.kernel_prefix)
    if pending_in is not None:
        planned = {slug: [r for r in runs if not records.is_finished(
            records.run_dir(pending_in, r.experiment, r.model.name, r.dataset.name, r.category, r.seed), r.config_hash)]
            for slug, runs in planned.items()}
        planned = {slug: runs for slug, runs in planned.items() if runs}
    inputs = {slug: shard_inputs(runs, spec) for slug, runs in planned.items()}  # every shard checked first
    wheel, wheel_sha, commit = build_code_folder(out_root / CODE_DIR, owner, spec)
    if (exp_root / "kernels").exists():
        shutil.rmtree(exp_root / "kernels")
    shards = []
    for slug, runs in planned.items():
        folder = exp_root / "kernels" / slug
        folder.mkdir(parents=True)
        cells = [[r.model.name, r.dataset.name, r.category, r.seed] for r in runs]
        nb = shard_notebook({**shard_parameters(params_file, slug, cells, spec, inputs[slug], (wheel.name, wheel_sha,
                                                                                              commit)), **(extra or {})})
        import nbformat

        nbformat.write(nb, folder / f"{slug}.ipynb")
        meta = kernel_metadata(slug, owner, spec, f"{slug}.ipynb", dataset_sources(inputs[slug], owner,
                                                                                  spec.code_dataset, None))
        rules.check_kernel_metadata(meta)
        (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        shards.append(Shard(slug, meta["id"], [tuple(c) for c in cells], str(folder)))
        steps = training_steps(runs, exp.evaluation.val_ratio)
        log.info("%s: %d runs, %s", slug, len(runs), "training steps unknown (counts not published)" if steps is None
                 else f"{steps:,} training steps: within {spec.deadline_s / 3600:.1f} h if a step takes under "
                      f"{spec.deadline_s / steps:.3f} s")
    listed = [dataclasses.asdict(s) for s in shards]
    if pending_in is not None and (exp_root / MANIFEST).is_file():  # shards with nothing left stay listed for status/pull
        listed += [old for old in json.loads((exp_root / MANIFEST).read_text())["shards"] if old["slug"] not in planned]
    manifest = {"experiment": exp.name, "params_file": str(params_file), "shard_by": shard_by, "pending": bool(pending_in),
                "accelerator": spec.accelerator, "shards": listed}
    records.write_json_atomic(exp_root / MANIFEST, manifest)
    log.info("%d shard(s) of %s written under %s (%d runs)", len(shards), exp.name, exp_root,
             sum(len(s.runs) for s in shards))
    return shards


def resolve_owner(spec: KaggleSpec, api: KaggleApi | None) -> str:
    """The Kaggle user: params, else KAGGLE_USERNAME, else the API's credentials, else a placeholder (dry runs)."""
    owner = spec.owner or os.environ.get("KAGGLE_USERNAME") or (api.username() if api else None)
    return owner or NO_OWNER


def push(params_file: Path | str, out_root: Path | str = "outputs/kaggle", kaggle_params: Path | str | None = None,
         shard_by: list[str] | None = None, accelerator: str | None = None, dry_run: bool = False,
         api: KaggleApi | None = None, pending_in: Path | str | None = None, poll_s: float = 10.0) -> list[Shard]:
    """Write the folders and (unless dry_run) push the code dataset, wait for it, and push every shard's kernel."""
    spec = load_kaggle_spec(kaggle_params)
    if accelerator:
        rules.check_accelerator(accelerator)
        spec = dataclasses.replace(spec, accelerator=accelerator)
    if not dry_run and api is None:
        api = KaggleApiBoundary()
    owner = resolve_owner(spec, api)
    if not dry_run and owner == NO_OWNER:
        raise KaggleSetupError("no Kaggle user name: set owner in the Kaggle params or KAGGLE_USERNAME")
    shards = write_shards(params_file, Path(out_root), spec, shard_by or ["model", "dataset"], owner,
                          Path(pending_in) if pending_in else None)
    if dry_run or not shards:
        for s in shards:
            log.info("dry run: %s (%d runs) in %s", s.kernel_id, len(s.runs), s.folder)
        return shards
    version = upload_code(api, Path(out_root) / CODE_DIR, f"{owner}/{spec.code_dataset}", spec.dataset_wait_s, poll_s,
                          f"vadbench code for {Path(params_file).name}")
    for s in shards:
        meta_path = Path(s.folder) / "kernel-metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["dataset_sources"][0] = f"{owner}/{spec.code_dataset}/{version}"  # pinned to the version just made
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")
        url = api.push_kernel(Path(s.folder), spec.accelerator, spec.timeout_s)
        log.info("pushed %s (%d runs): %s", s.kernel_id, len(s.runs), url)
    return shards


def upload_code(api: KaggleApi, folder: Path, dataset_id: str, wait_s: float, poll_s: float, notes: str) -> int:
    """Create or version the code dataset and wait until the new version is ready; its version number."""
    state, before = api.dataset_status(dataset_id)
    if state == "missing":
        api.create_dataset(folder)
        before = 0
    else:
        api.version_dataset(folder, notes)
    waited = 0.0
    while True:
        state, version = api.dataset_status(dataset_id)
        if state == "ready" and version and version > (before or 0):
            log.info("code dataset %s version %d is ready", dataset_id, version)
            return int(version)
        if state == "error":
            raise KaggleApiError(f"Kaggle could not process the code dataset {dataset_id} (status error); push again")
        if waited >= wait_s:
            raise KaggleApiError(f"code dataset {dataset_id} not ready after {wait_s:.0f} s (status {state}, version "
                                 f"{version}); raise dataset_wait_s in the Kaggle params or push again later")
        time.sleep(poll_s)
        waited += poll_s


def load_manifests(out_root: Path | str, experiment: str | None = None) -> list[dict[str, Any]]:
    """The shard manifests under out_root (one experiment's, or all)."""
    paths = sorted(Path(out_root).glob(f"{experiment or '*'}/{MANIFEST}"))
    if not paths:
        raise KaggleSetupError(f"no Kaggle shards under {out_root}: run `vadbench kaggle push X.yaml` first")
    return [json.loads(p.read_text()) for p in paths]


def shard_counts(out_root: Path | str, experiment: str, slug: str) -> dict[str, int] | None:
    """finished/failed/deferred counts of a shard from its last pulled status file, None before a pull."""
    path = Path(out_root) / experiment / "downloads" / slug / STATUS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {key: len(data.get(key, [])) for key in ("finished", "failed", "deferred")}


def status(out_root: Path | str = "outputs/kaggle", experiment: str | None = None,
           api: KaggleApi | None = None) -> list[tuple[str, str, str, dict[str, int] | None]]:
    """(kernel id, state, message, run counts of the last pull) of every shard's kernel."""
    api = api or KaggleApiBoundary()
    rows = []
    for manifest in load_manifests(out_root, experiment):
        for shard in manifest["shards"]:
            state, message = api.kernel_status(shard["kernel_id"])
            counts = shard_counts(out_root, manifest["experiment"], shard["slug"])
            rows.append((shard["kernel_id"], state, message, counts))
            text = ", ".join(f"{v} {k}" for k, v in counts.items()) if counts else "not pulled yet"
            log.info("%-58s %-9s %d runs: %s %s", shard["kernel_id"], state, len(shard["runs"]), text, message)
    return rows


def logs(slug: str, out_root: Path | str = "outputs/kaggle", api: KaggleApi | None = None) -> str:
    """A shard kernel's log (slug, or owner/slug)."""
    api = api or KaggleApiBoundary()
    ids = [s["kernel_id"] for m in load_manifests(out_root) for s in m["shards"]]
    kernel = next((k for k in ids if k == slug or k.split("/")[1] == slug), None)
    if kernel is None:
        raise KaggleSetupError(f"no shard {slug!r} under {out_root}; `vadbench kaggle status` lists them")
    return api.kernel_logs(kernel)


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
    """Copy each downloaded run folder whose record is new or replaces a failed one; same record = unchanged;
    a different one = conflict (the local record is kept)."""
    for record_path in records.find_records(source):
        run_dir = record_path.parent
        rel = run_dir.relative_to(source)
        target = runs_root / rel
        if (target / records.RECORD_FILE).is_file() and (_status(target) == "ok" or _status(run_dir) != "ok"):
            same = _same_record(record_path, target / records.RECORD_FILE)
            (result.unchanged if same else result.conflicts).append(str(rel))
            continue
        _copy_run(run_dir, target)
        result.added.append(str(rel))


def _status(run_dir: Path) -> str | None:
    try:
        return records.read_record(run_dir).get("status")
    except (OSError, ValueError):
        return None


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
