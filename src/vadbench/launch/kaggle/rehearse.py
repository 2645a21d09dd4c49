"""Rehearse a Kaggle push on this machine: execute the generated shard notebook in a replica of a kernel.

`vadbench kaggle rehearse X.yaml [--shard NAME] [--smoke] [--deadline-s N]` writes the shards as `push`
does (into outputs/kaggle-rehearsal), then executes each shard's generated notebook with papermill
with this machine's data as read-only mounts at /kaggle/input/<slug> and at /kaggle/input/datasets/<owner>/<slug>
(both layouts the service mounts) and /kaggle/working bound to a folder under the rehearsal's output, the working
directory. As root with `unshare`, that happens in a private mount namespace
(a tmpfs on /kaggle, read-only bind mounts; /kaggle is created only while a replica runs and removed after
when it did not exist, and holds a marker file per running replica so that no cleanup removes it under one);
otherwise the inputs are read-only copies under the rehearsal folder, said so
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
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
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
    owner = shard.kernel_id.split("/")[0]
    binds = [(out_root / CODE_DIR, f"{owner}/{code_dataset}")] + [(Path(k), v) for k, v in all_mounts.items()
                                                                 if k in values["mounts"]]
    if values["teacher_weights"]:  # this machine's anomalib teacher folder stands for the attached teacher dataset
        from vadbench.launch.kaggle.kernel.inputs import teacher_dir

        binds.append((teacher_dir(), values["teacher_weights"]))
    namespace = can_namespace()
    if not namespace:
        log.warning("no unshare as root here: the rehearsal copies the inputs read-only instead of mounting them")
    nb = parameters.parameterize(nb, replica_overrides(nb, base, working, binds, namespace))
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


def can_namespace() -> bool:
    """Whether inputs can be bind-mounted in a private mount namespace here (root and `unshare`)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def mount_points(ref: str) -> list[str]:
    """Where Kaggle mounts an attached dataset `owner/slug[/sub]` under /kaggle/input: `<slug>[/sub]` and, in the
    layout the service now uses as well, `datasets/<owner>/<slug>[/sub]`."""
    owner, slug, *sub = ref.split("/")
    return ["/".join([slug, *sub]), "/".join(["datasets", owner, slug, *sub])]


def replica_overrides(nb: Any, base: Path, working: Path, binds: list[tuple[Path, str]],
                      namespace: bool) -> dict[str, Any]:
    """The replica's own folders as parameter values, for the names the notebook declares: a project, scratch and
    site folder per kernel under `base` (a Kaggle kernel's /tmp is its own); without a namespace, read-only copies of
    the inputs under `base` and the runs written straight into `working`."""
    values = {"work_dir": str((base / "project").resolve()), "scratch_dir": str((base / "scratch").resolve()),
              "site_dir": str((base / "site").resolve())}
    if not namespace:
        input_root = base / "kaggle" / "input"
        for src, ref in binds:
            for rel in mount_points(ref):
                shutil.copytree(src.resolve(), input_root / rel, symlinks=False)
        input_root.mkdir(parents=True, exist_ok=True)
        _make_read_only(input_root)
        values.update(input_root=str(input_root.resolve()), output_dir=str((working / "runs").resolve()))
    declared = parameters.declared(nb)
    return {k: v for k, v in values.items() if k in declared}


@dataclass
class ReplicaRun:
    """How a run in the replica ended: exit status, its output, and why it was stopped ("timeout", "cancelled")."""

    returncode: int
    stdout: str
    stderr: str
    stopped: str = ""


KAGGLE = Path("/kaggle")
_CREATED = ".created-by-a-replica"
_mount_lock = threading.Lock()


@contextmanager
def _kaggle_mount_point() -> Iterator[None]:
    """/kaggle, over which each replica mounts its private tmpfs, kept while any replica runs on this machine.

    Removing /kaggle would unmount the /kaggle of every replica running in another namespace (their inputs and
    /kaggle/working vanish mid-run), so each run holds a marker file in it and /kaggle is never empty under a
    running replica; the last run out removes it if a replica created it and no namespace has a mount there."""
    marker = KAGGLE / f".replica-{os.getpid()}-{threading.get_ident()}-{time.monotonic_ns()}"
    with _mount_lock:
        for _ in range(5):  # another process's last run out may remove /kaggle between the two steps
            if not KAGGLE.exists():
                KAGGLE.mkdir(exist_ok=True)
                (KAGGLE / _CREATED).touch()
            with suppress(FileNotFoundError):
                marker.touch()
                break
    try:
        yield
    finally:
        with _mount_lock:
            marker.unlink(missing_ok=True)
            if (KAGGLE / _CREATED).exists() and not any(p.name.startswith(".replica-") for p in KAGGLE.iterdir()) \
                    and not _mounted_elsewhere():
                (KAGGLE / _CREATED).unlink(missing_ok=True)
                with suppress(OSError):
                    KAGGLE.rmdir()


def _mounted_elsewhere() -> bool:
    """Whether some process's mount namespace has a mount at or below /kaggle (a replica that holds no marker)."""
    for info in Path("/proc").glob("[0-9]*/mountinfo"):
        with suppress(OSError):
            for line in info.read_text().splitlines():
                point = line.split(" ")[4]
                if point == str(KAGGLE) or point.startswith(f"{KAGGLE}/"):
                    return True
    return False


def execute_in_replica(notebook: Path, executed: Path, binds: list[tuple[Path, str]], working: Path, base: Path,
                       namespace: bool, command: list[str] | None = None,
                       on_output: Callable[[str, str], None] | None = None, timeout_s: float | None = None,
                       cancel: threading.Event | None = None) -> ReplicaRun:
    """Run papermill on the notebook (or `command`) with /kaggle/working as the working directory, inside a private
    mount namespace when possible: each bind `(folder, "owner/slug[/sub]")` mounted read-only at both of
    `mount_points`. `on_output(stream, line)` sees each line as it comes; past `timeout_s`, or once `cancel` is set,
    the whole process group is killed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VADBENCH_NOTEBOOKS", "VADBENCH_GIT_COMMIT")
           and not k.startswith("KAGGLE_") and not k.lower().endswith("_proxy")}  # a kernel holds no credentials
    env["XDG_CACHE_HOME"] = str((base / "cache").resolve())  # anomalib's weights cache of this replica
    run = command or [sys.executable, "-m", "papermill", str(notebook.resolve()), str(executed.resolve()),
                      "--log-output", "-k", "python3"]
    if not namespace:
        return _run_streamed(run, env, working, on_output, timeout_s, cancel)
    steps = ["mount -t tmpfs tmpfs /kaggle", "mkdir -p /kaggle/working /kaggle/input"]
    for src, ref in binds:
        for rel in mount_points(ref):
            dst = shlex.quote(f"/kaggle/input/{rel}")
            steps += [f"mkdir -p {dst}", f"mount --bind {shlex.quote(str(src.resolve()))} {dst}",
                      f"mount -o remount,bind,ro {dst}"]
    steps += [f"mount --bind {shlex.quote(str(working.resolve()))} /kaggle/working", "cd /kaggle/working",
              "exec " + shlex.join(run)]
    with _kaggle_mount_point():
        return _run_streamed(["unshare", "-m", "--propagation", "private", "sh", "-ec", " && ".join(steps)], env,
                             working, on_output, timeout_s, cancel)


def _run_streamed(run: list[str], env: dict[str, str], cwd: Path, on_output: Callable[[str, str], None] | None,
                  timeout_s: float | None, cancel: threading.Event | None) -> ReplicaRun:
    """Run in a new process group, pumping stdout and stderr line by line; kill the group on timeout or cancel."""
    proc = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                            start_new_session=True)
    seen: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(stream: Any, name: str) -> None:
        for line in stream:
            seen[name].append(line)
            if on_output:
                on_output(name, line)

    pumps = [threading.Thread(target=pump, args=(proc.stdout, "stdout"), daemon=True),
             threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
    for pump_thread in pumps:
        pump_thread.start()
    ends = time.monotonic() + timeout_s if timeout_s else None
    stopped = ""
    while proc.poll() is None:
        stopped = "cancelled" if cancel is not None and cancel.is_set() else \
            "timeout" if ends is not None and time.monotonic() > ends else ""
        if stopped:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    for pump_thread in pumps:
        pump_thread.join(timeout=10)
    return ReplicaRun(proc.returncode, "".join(seen["stdout"]), "".join(seen["stderr"]), stopped)


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
