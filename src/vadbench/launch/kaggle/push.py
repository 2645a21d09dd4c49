"""Push an experiment as Kaggle kernels: shard folders, the code dataset, then the kernels not pushed yet.

`vadbench kaggle push X.yaml` splits the run grid into shards (`--shard-by model,dataset` by default),
writes one kernel folder per shard (kernel-metadata.json + a notebook generated from
notebooks/kaggle_shard.ipynb) and a code folder (a wheel of this package and train_evaluate.ipynb),
checks every dataset the kernels attach (`datasets.preflight`) before anything is uploaded, pushes the
code as a private Kaggle dataset (unless this wheel's version is there already), waits until it is ready,
pins every kernel to it and pushes the kernels not pushed yet, in order, until the service refuses one
for the account's GPU session limit: those wait, recorded in the manifest (`manifest`), for the next
`push` or for `drive`. A shard already pushed with the same runs is not pushed again; `--pending`
pushes again every shard (not running) that has runs without a finished record in the runs root.
All network access goes through `api.KaggleApiBoundary`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vadbench import records
from vadbench.config import Experiment, RunSpec, load_experiment
from vadbench.errors import KaggleSetupError
from vadbench.launch.execute import NOTEBOOK
from vadbench.launch.kaggle import datasets, manifest, rules
from vadbench.launch.kaggle.api import KaggleApi, KaggleApiBoundary, KaggleApiError, KaggleUnavailable, SessionLimitError
from vadbench.launch.kaggle.shards import (
    CODE_DIR,
    Shard,
    ShardInputs,
    dataset_sources,
    kernel_metadata,
    plan_shards,
    shard_inputs,
    shard_notebook,
    shard_parameters,
)
from vadbench.launch.kaggle.spec import KaggleSpec, load_kaggle_spec, resolve_owner
from vadbench.launch.steps import training_steps
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


def write_shard(exp_root: Path, slug: str, runs: list[RunSpec], params_file: Path | str, spec: KaggleSpec,
                owner: str, inputs: ShardInputs, code: dict[str, Any], extra: dict[str, Any] | None = None) -> Shard:
    """Write one shard's kernel folder (notebook and kernel-metadata.json) from scratch."""
    import nbformat

    folder = exp_root / "kernels" / slug
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    cells = [[r.model.name, r.dataset.name, r.category, r.seed] for r in runs]
    values = shard_parameters(params_file, slug, cells, spec, inputs, (code["wheel"], code["wheel_sha256"],
                                                                        code["commit"]))
    nbformat.write(shard_notebook({**values, **(extra or {})}), folder / f"{slug}.ipynb")
    meta = kernel_metadata(slug, owner, spec, f"{slug}.ipynb", dataset_sources(inputs, owner, spec.code_dataset, None))
    rules.check_kernel_metadata(meta)
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    steps = training_steps(runs, load_experiment(params_file).evaluation.val_ratio)
    log.info("%s: %d runs, %s", slug, len(runs), "training steps unknown (counts not published)" if steps is None
             else f"{steps:,} training steps: within {spec.deadline_s / 3600:.1f} h if a step takes under "
                  f"{spec.deadline_s / steps:.3f} s")
    return Shard(slug, meta["id"], [tuple(c) for c in cells], str(folder))


def write_shards(params_file: Path | str, out_root: Path, spec: KaggleSpec, shard_by: list[str], owner: str,
                 pending_in: Path | None = None, extra: dict[str, Any] | None = None,
                 only: set[str] | None = None) -> list[Shard]:
    """Write the folders of the shards to push (and the code folder), and the manifest; the shards written.

    A shard pushed before with the same runs, or running, keeps its folder and manifest entry.
    pending_in: a runs root; runs finished there are left out (shards left empty are not written, and stay
    listed). extra: notebook parameters to override (the rehearsal's). only: write no other shards.
    """
    exp = load_experiment(params_file)
    exp_root = out_root / exp.name
    old = manifest.load(exp_root) or {}
    before = {e["slug"]: e for e in old.get("shards", [])}
    planned = _planned(exp, spec, shard_by, pending_in)
    inputs = {slug: shard_inputs(runs, spec) for slug, runs in planned.items()}  # every shard checked first
    cells = {slug: [[r.model.name, r.dataset.name, r.category, r.seed] for r in runs] for slug, runs in planned.items()}
    to_write = [slug for slug in planned if (only is None or slug in only)
                and not manifest.keeps(before.get(slug), cells[slug], pending_in is not None)]
    code = _code_record(out_root, owner, spec, old.get("code")) if to_write else old.get("code")
    shards = [write_shard(exp_root, slug, planned[slug], params_file, spec, owner, inputs[slug], code, extra)
              for slug in to_write]
    written = {s.slug: manifest.new_entry(s.slug, s.kernel_id, list(s.runs), s.folder, before.get(s.slug))
               for s in shards}
    entries = [written.get(slug) or before[slug] for slug in planned if slug in written or slug in before]
    if pending_in is not None or only is not None:  # shards with nothing left to write stay listed for status/pull
        entries += [entry for slug, entry in before.items() if slug not in planned]
    listed = {e["slug"] for e in entries}
    for stale in (exp_root / "kernels").glob("*") if (exp_root / "kernels").is_dir() else []:
        if stale.name not in listed:
            shutil.rmtree(stale)
    manifest.save(exp_root, {"experiment": exp.name, "params_file": str(params_file),
                             "params_sha256": manifest.params_digest(params_file), "shard_by": shard_by,
                             "pending": bool(pending_in), "accelerator": spec.machine_shape or "cpu", "image_pin": spec.image_pin,
                             "code": code, "shards": entries})
    log.info("%d shard(s) of %s written under %s (%d runs); %d listed", len(shards), exp.name, exp_root,
             sum(len(s.runs) for s in shards), len(entries))
    return shards


def _planned(exp: Experiment, spec: KaggleSpec, shard_by: list[str], pending_in: Path | None) -> dict[str, list[RunSpec]]:
    """The shards' runs: all, or (pending_in) those without a finished record there; shards left empty dropped."""
    planned = plan_shards(exp, shard_by, spec.kernel_prefix)
    if pending_in is None:
        return planned
    planned = {slug: [r for r in runs if not records.is_finished(
        records.run_dir(pending_in, r.experiment, r.model.name, r.dataset.name, r.category, r.seed), r.config_hash)]
        for slug, runs in planned.items()}
    return {slug: runs for slug, runs in planned.items() if runs}


def _code_record(out_root: Path, owner: str, spec: KaggleSpec, old: dict[str, Any] | None) -> dict[str, Any]:
    """Build the code folder; its manifest record, keeping the uploaded version when the wheel is the same."""
    wheel, sha, commit = build_code_folder(out_root / CODE_DIR, owner, spec)
    dataset = f"{owner}/{spec.code_dataset}"
    same = bool(old) and old.get("wheel_sha256") == sha and old.get("dataset") == dataset
    return {"dataset": dataset, "wheel": wheel.name, "wheel_sha256": sha, "commit": commit,
            "version": old.get("version") if same and old else None}


def push(params_file: Path | str, out_root: Path | str = "outputs/kaggle", kaggle_params: Path | str | None = None,
         shard_by: list[str] | None = None, accelerator: str | None = None, dry_run: bool = False,
         api: KaggleApi | None = None, pending_in: Path | str | None = None, poll_s: float = 10.0) -> list[Shard]:
    """Write the folders and (unless dry_run) check the datasets, push the code dataset if needed, wait for it,
    and push the shards not pushed yet until the service's session limit; the shards written."""
    spec = load_kaggle_spec(kaggle_params)
    if accelerator:
        rules.check_accelerator(accelerator)
        spec = dataclasses.replace(spec, accelerator=accelerator)
    if not dry_run and api is None:
        api = KaggleApiBoundary()
    owner, out_root = resolve_owner(spec, api), Path(out_root)
    exp_root = out_root / load_experiment(params_file).name
    with contextlib.nullcontext() if dry_run else manifest.driving(exp_root):
        if api is not None and (known := manifest.load(exp_root)):
            refresh_states(api, known, time.time())  # a shard pushed before may have ended since
            manifest.save(exp_root, known)
        shards = write_shards(params_file, out_root, spec, shard_by or ["model", "dataset"], owner,
                              Path(pending_in) if pending_in else None)
        if dry_run or api is None:
            for s in shards:
                log.info("dry run: %s (%d runs) in %s", s.kernel_id, len(s.runs), s.folder)
            return shards
        man = manifest.load(exp_root) or {}
        todo = [e for e in man.get("shards", []) if e["state"] in manifest.TO_PUSH]
        if not todo:
            log.info("nothing to push: every shard of %s was pushed (`vadbench kaggle status`); --pending pushes "
                     "the runs without a finished record again", man.get("experiment"))
            return shards
        datasets.check_sources(api, spec, owner, [Path(e["folder"]) for e in todo])
        version = ensure_code(api, man, exp_root, out_root, spec, poll_s)
        pushed, stopped = push_shards(api, man, exp_root, todo, spec, version)
        if stopped:
            log.warning("%d shard(s) not pushed: %s. `vadbench kaggle push %s` again pushes only those (or "
                        "`vadbench kaggle drive %s` pushes each when a session ends)", len(todo) - len(pushed),
                        stopped, params_file, params_file)
    return shards


def refresh_states(api: KaggleApi, man: dict[str, Any], now: float) -> bool:
    """Ask the service for the state of each shard pushed and not ended; whether any changed (not saved here)."""
    changed = False
    for entry in [e for e in man["shards"] if e["state"] in manifest.ACTIVE]:
        state, message = api.kernel_status(entry["kernel_id"])
        new = manifest.FROM_KERNEL.get(state, "error")
        if state not in manifest.FROM_KERNEL:  # MISSING: the service no longer knows the kernel it took
            message = f"Kaggle answers {state!r} for this pushed kernel: {message}"
        elif state == "cancel_acknowledged":
            message = message or "the session was cancelled"
        if new != entry["state"] or message != entry["message"]:
            manifest.set_state(entry, new, message, now)
            changed = True
    return changed


def ensure_code(api: KaggleApi, man: dict[str, Any], exp_root: Path, out_root: Path, spec: KaggleSpec,
                poll_s: float, sleep: Callable[[float], None] = time.sleep) -> int:
    """The code dataset version the shards' wheel is in: uploaded (and waited for) unless the manifest has it."""
    code = man["code"]
    if code.get("version"):
        return int(code["version"])
    wheel = out_root / CODE_DIR / code["wheel"]
    if not wheel.is_file() or hashlib.sha256(wheel.read_bytes()).hexdigest() != code["wheel_sha256"]:
        raise KaggleSetupError(f"{wheel} is not the wheel the shards of {man['experiment']} were written with (another "
                               "push rebuilt the code folder); push again")
    code["version"] = datasets.upload(api, out_root / CODE_DIR, code["dataset"], f"vadbench {code['commit'][:12]} for "
                                      f"{man['experiment']}", spec.dataset_wait_s, poll_s, sleep=sleep)
    manifest.save(exp_root, man)
    return int(code["version"])


def push_shards(api: KaggleApi, man: dict[str, Any], exp_root: Path, entries: list[dict[str, Any]], spec: KaggleSpec,
                code_version: int, limit: int | None = None) -> tuple[list[str], str]:
    """Push these shards in order (at most `limit`), each pinned to the code version, recording each answer.

    Stops at the account's session limit or an unreachable service (the rest stay `written`, the reason in
    their message); another refusal makes that shard `never pushed` and the next is tried. (pushed slugs,
    why it stopped or "").
    """
    pushed: list[str] = []
    for entry in entries:
        if limit is not None and len(pushed) >= limit:
            break
        folder = Path(entry["folder"])
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        meta["dataset_sources"][0] = f"{man['code']['dataset']}/{code_version}"  # pinned to the ready version
        (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            with manifest.holding_interrupts():  # a push the service took is always recorded
                done = api.push_kernel(folder, spec.machine_shape, spec.timeout_s)
                manifest.open_session(entry, done.version, done.url, code_version,
                                      meta.get("docker_image_pinning_type", ""))
                if done.invalid:  # saved and started all the same: it will fail without them
                    manifest.set_state(entry, "pushed", f"Kaggle left out {done.invalid}")
                manifest.save(exp_root, man)
        except (SessionLimitError, KaggleUnavailable) as exc:
            waiting = [e for e in entries if e["state"] in manifest.TO_PUSH]
            for other in waiting:  # the shards after it were not tried: they wait for the same reason
                manifest.set_state(other, "written", f"waiting: {exc}" if other is entry else
                                   f"waiting, not tried after {entry['slug']}: {exc}")
            manifest.save(exp_root, man)
            return pushed, str(exc)
        except KaggleApiError as exc:
            manifest.set_state(entry, "never pushed", str(exc))
            manifest.save(exp_root, man)
            log.error("not pushed: %s", exc)
            continue
        pushed.append(entry["slug"])
        log.info("pushed %s (%d runs, version %s, image pin %s): %s", entry["kernel_id"], len(entry["runs"]),
                 done.version, meta.get("docker_image_pinning_type"), done.url)
        if done.invalid:
            log.error("%s was saved and started without what Kaggle left out (%s): it will fail; fix the Kaggle params",
                      entry["kernel_id"], done.invalid)
    return pushed, ""
