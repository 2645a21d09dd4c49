"""Push an experiment as Kaggle kernels: shard folders, the code dataset, then the kernels.

`vadbench kaggle push X.yaml` splits the run grid into shards (`--shard-by model,dataset` by default),
writes one kernel folder per shard (kernel-metadata.json + a notebook generated from
notebooks/kaggle_shard.ipynb) and a code folder (a wheel of this package and train_evaluate.ipynb),
pushes the code as a private Kaggle dataset, waits until that version is ready, pins every kernel to it
and pushes the kernels. `--pending` pushes only runs without a finished record in the runs root.
All network access goes through `api.KaggleApiBoundary`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from vadbench import records
from vadbench.config import load_experiment
from vadbench.errors import KaggleSetupError
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.kaggle import rules
from vadbench.launch.kaggle.api import KaggleApi, KaggleApiBoundary, KaggleApiError
from vadbench.launch.kaggle.shards import (
    CODE_DIR,
    MANIFEST,
    Shard,
    dataset_sources,
    kernel_metadata,
    plan_shards,
    shard_inputs,
    shard_notebook,
    shard_parameters,
    training_steps,
)
from vadbench.launch.kaggle.spec import NO_OWNER, KaggleSpec, load_kaggle_spec, resolve_owner
from vadbench.paths import git_commit, notebooks_dir

log = logging.getLogger(__name__)


def build_code_folder(folder: Path, owner: str, spec: KaggleSpec) -> tuple[Path, str, str]:
    """The code dataset folder (metadata, wheel, train_evaluate.ipynb); (wheel, its sha256, the commit)."""
    from vadbench.launch.kaggle.wheel import build_wheel

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


