"""Rehearse a Kaggle push on this machine: execute the generated shard notebook in a replica of a kernel.

`vadbench kaggle rehearse X.yaml [--shard NAME] [--smoke] [--deadline-s N]` writes the shards as `push`
does (into outputs/kaggle-rehearsal), then executes each shard's generated notebook with papermill
with /kaggle/input/<slug> holding this machine's data as read-only mounts and /kaggle/working bound to a
folder under the rehearsal's output. As root with `unshare`, that happens in a private mount namespace
(a tmpfs on /kaggle, read-only bind mounts; /kaggle is created only for the run and removed after
when it did not exist); otherwise the inputs are read-only copies under the rehearsal folder, said so
in the log. The install cell runs with `pip --no-index` against this environment (it fails rather than
download anything) and installs the wheel into a scratch folder. `--smoke` rewrites the params to a
tiny budget (first category per dataset, 2 steps, 64 px; EfficientAD 256 px, its smallest); a local
`vadbench run` of that file gives the same config hashes. `pull_rehearsal` merges the outputs into a runs root as `pull` does.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from vadbench import records
from vadbench.launch import parameters
from vadbench.launch.kaggle import pull, push
from vadbench.launch.kaggle.shards import CODE_DIR, Shard
from vadbench.launch.kaggle.spec import load_kaggle_spec

log = logging.getLogger(__name__)
OUT = Path("outputs/kaggle-rehearsal")
SMOKE_STEPS, SMOKE_SIZE = 2, 64


def smoke_params(params_file: Path | str, out_dir: Path, categories: int = 1) -> Path:
    """A copy of the params with a smoke budget: first categories per dataset, 2 steps, 64 px (EfficientAD: 256),
    short timing."""
    data = yaml.safe_load(Path(params_file).read_text(encoding="utf-8"))
    for ds in data["datasets"]:
        ds["categories"] = ds["categories"][:categories]
    for model in data["models"]:
        model["image_size"] = 256 if model["kind"] == "efficientad" else SMOKE_SIZE  # EfficientAD fails below 256 px
        model["train"] = {"max_steps": SMOKE_STEPS, "batch_size": min(int(model.get("train", {}).get("batch_size", 2)), 4)}
    data["evaluation"] = {**data.get("evaluation", {}), "eval_batch_size": 16, "num_workers": 0, "timing_warmup": 1,
                          "timing_iterations": 2, "figure_images": 1}
    data["device"] = "cpu"
    out = out_dir / f"{data['name']}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def rehearse(params_file: Path | str, kaggle_params: Path | str | None = None, shard: str | None = None,
             smoke: bool = False, deadline_s: float | None = None, out_root: Path | str = OUT,
             shard_by: list[str] | None = None, smoke_categories: int = 1) -> list[dict[str, Any]]:
    """Write the shards and execute each (or those whose slug starts with `shard`) in a kernel replica."""
    out_root = Path(out_root)
    if smoke:
        params_file = smoke_params(params_file, out_root / "params", smoke_categories)
    spec = load_kaggle_spec(kaggle_params)
    extra = {"pip_options": ["--no-index"], "require_gpu": False, **({"deadline_s": float(deadline_s)}
                                                                        if deadline_s is not None else {})}
    shards = push.write_shards(params_file, out_root, spec, shard_by or ["model", "dataset"], "rehearsal",
                                      extra=extra)
    chosen = [s for s in shards if shard is None or shard in (s.slug, s.kernel_id) or s.slug.startswith(shard)]
    if not chosen:
        from vadbench.errors import KaggleSetupError
        raise KaggleSetupError(f"no shard {shard!r}; shards: {', '.join(s.slug for s in shards)}")
    exp_name = Path(shards[0].folder).parents[1].name
    return [_rehearse_shard(s, exp_name, spec.mounts, spec.code_dataset, out_root) for s in chosen]


def _rehearse_shard(shard: Shard, exp_name: str, all_mounts: dict[str, str], code_dataset: str,
                    out_root: Path) -> dict[str, Any]:
    """Execute one shard's notebook in a replica; its working folder lands in downloads/<slug> for pull."""
    import nbformat

    base = out_root / exp_name / "replica" / shard.slug
    if base.exists():
        _make_writable(base)
        shutil.rmtree(base)
    working = out_root / exp_name / "downloads" / shard.slug
    if working.exists():
        shutil.rmtree(working)
    working.mkdir(parents=True)
    notebook = Path(shard.folder) / f"{shard.slug}.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    values = parameters.values(nb)
    binds = [(out_root / CODE_DIR, code_dataset)] + [(Path(k), "/".join(v.split("/")[1:]))
                                                      for k, v in all_mounts.items() if k in values["mounts"]]
    if values["teacher_weights"]:  # this machine's anomalib teacher folder stands for the attached teacher dataset
        from vadbench.launch.kaggle.kernel.inputs import teacher_dir

        binds.append((teacher_dir(), "/".join(values["teacher_weights"].split("/")[1:])))
    overrides = {"work_dir": str((base / "project").resolve()), "scratch_dir": str((base / "scratch").resolve()),
                 "site_dir": str((base / "site").resolve())}
    namespace = os.geteuid() == 0 and shutil.which("unshare") is not None
    if not namespace:
        log.warning("no unshare as root here: the rehearsal copies the inputs read-only instead of mounting them")
        input_root = base / "kaggle" / "input"
        for src, rel in binds:
            shutil.copytree(src.resolve(), input_root / rel, symlinks=False)
        _make_read_only(input_root)
        overrides.update(input_root=str(input_root.resolve()), output_dir=str((working / "runs").resolve()))
    nb = parameters.parameterize(nb, overrides)
    executed = base / "executed.ipynb"
    base.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, base / "kernel.ipynb")
    started = time.monotonic()
    done = execute_in_replica(base / "kernel.ipynb", executed, binds, working, base, namespace)
    seconds = time.monotonic() - started
    status_path = working / records.SHARD_STATUS_FILE
    state = json.loads(status_path.read_text()) if status_path.is_file() else {}
    summary = {"shard": shard.slug, "ok": done.returncode == 0, "seconds": round(seconds, 1), "namespace": namespace,
               "notebook": str(executed), **{k: state.get(k, []) for k in ("finished", "failed", "deferred")}}
    log.info("rehearsal of %s: %s in %.0f s (%d finished, %d failed, %d deferred); notebook %s", shard.slug,
             "ok" if summary["ok"] else "FAILED", seconds, len(summary["finished"]), len(summary["failed"]),
             len(summary["deferred"]), executed)
    if done.returncode != 0:
        log.error("%s", done.stderr[-3000:])
    return summary


def execute_in_replica(notebook: Path, executed: Path, binds: list[tuple[Path, str]], working: Path, base: Path,
                       namespace: bool) -> subprocess.CompletedProcess:
    """Run papermill on the notebook, inside a private mount namespace when possible."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VADBENCH_NOTEBOOKS", "VADBENCH_GIT_COMMIT")}
    env["XDG_CACHE_HOME"] = str((base / "cache").resolve())  # anomalib's weights cache of this replica
    run = [sys.executable, "-m", "papermill", str(notebook.resolve()), str(executed.resolve()), "--log-output",
           "-k", "python3"]
    if not namespace:
        return subprocess.run(run, capture_output=True, text=True, env=env)
    steps = ["mount -t tmpfs tmpfs /kaggle", "mkdir -p /kaggle/working"]
    for src, rel in binds:
        dst = shlex.quote(f"/kaggle/input/{rel}")
        steps += [f"mkdir -p {dst}", f"mount --bind {shlex.quote(str(src.resolve()))} {dst}",
                  f"mount -o remount,bind,ro {dst}"]
    steps += [f"mount --bind {shlex.quote(str(working.resolve()))} /kaggle/working", shlex.join(run)]
    created = not Path("/kaggle").exists()
    if created:
        Path("/kaggle").mkdir()
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", " && ".join(steps)],
                              capture_output=True, text=True, env=env)
    finally:
        if created:
            Path("/kaggle").rmdir()


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


class RehearsalOutputs:
    """The KaggleApi a `pull` from a rehearsal uses: every shard complete, outputs already in downloads/."""

    def kernel_status(self, kernel_id: str) -> tuple[str, str]:
        return "complete", ""

    def download_output(self, kernel_id: str, dest: Path) -> list[Path]:
        return [p for p in Path(dest).rglob("*") if p.is_file()]


def pull_rehearsal(runs_root: Path | str, out_root: Path | str = OUT) -> pull.PullResult:
    """Merge a rehearsal's /kaggle/working records into a runs root, exactly as `pull` merges Kaggle's."""
    return pull.pull(out_root, runs_root, api=RehearsalOutputs())
