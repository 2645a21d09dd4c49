"""A strict in-memory Kaggle service for tests, at the API boundary: it answers what `api.KaggleApiBoundary`
makes of the real client's answers, and refuses what the real client or service refuses.

The loop's service behaviour is tested against the Kaggle stand-in with the real client (tests/test_kaggle_loop.py);
this fake stays for what would need real sessions of minutes there: sessions that end as a test chooses (runs
deferred at the deadline, no progress, a record lost), drive on a clock of its own, SIGINT inside a push, a service
without a quota answer, `push --pending` of ended shards, and the study files' pushes (one per shipped file).

The metadata rules are the installed kaggle client's own code (`validate_dataset_string`,
`validate_kernel_string`, its push language/type/pinning lists, python-slugify as the client uses it)
and the rules its `dataset_create_new` applies (slug and title 6-50 characters, exactly one licence);
the service's rules are those of its answers: a slug it does not know is `MISSING` (the client raises
403/404); dataset versions go through the client's DatabundleVersionStatus names (`processing` of them
for `process_polls` status polls, then `ready`, or `failed` for a dataset in `fail_next`); at most
`gpu_sessions` kernels queued or running at once, a further push refused with the service's
"Maximum batch GPU session count of N reached." (SessionLimitError, as the boundary raises it); a
source that does not exist is left out of the saved kernel (Pushed.invalid) and the session errors.

Kernel sessions go queued (the first status poll) -> running (`run_polls` polls) -> complete, one step per
status poll of that kernel. When a session completes, `session(kernel_id, values, dest)` (if given) writes its
/kaggle/working outputs from the pushed notebook's parameter values; `outputs` gives fixed output folders.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from collections.abc import Callable
from pathlib import Path

import nbformat

from vadbench.launch import parameters
from vadbench.launch.kaggle import rules
from vadbench.launch.kaggle.api import MISSING, KaggleApiError, Pushed, SessionLimitError

PROCESSING = "blobs_received"  # a DatabundleVersionStatus name of a version not ready yet


def _client():
    from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi.__new__(KaggleApi)  # not authenticated: only its validation methods are used


class FakeKaggle:
    """The API boundary, in memory: datasets with versions and states, kernels with sessions."""

    def __init__(self, outputs: dict[str, Path] | None = None, states: dict[str, str] | None = None,
                 user: str = "tester", existing: tuple[str, ...] = (), gpu_sessions: int = 2, run_polls: int = 1,
                 process_polls: int = 1,
                 session: Callable[[str, dict, Path], str | None] | None = None) -> None:
        self.user, self.gpu_sessions, self.run_polls, self.process_polls = user, gpu_sessions, run_polls, process_polls
        self.datasets: dict[str, int] = {ref: 1 for ref in existing}  # owner/slug -> latest version
        self.dataset_state: dict[str, list[str]] = {}  # owner/slug -> states its latest version goes through
        self.fail_next: set[str] = set()  # datasets whose next version fails
        self.uploads: list[tuple[str, str, list[str]]] = []  # (owner/slug, dir_mode, files sent)
        self.pushed: list[tuple[str, str, int, dict]] = []
        self.kernels: dict[str, dict] = {}  # kernel id -> its latest session
        self.outputs, self.states = outputs or {}, states or {}
        self.session = session
        self.downloads: list[str] = []
        self.logs: dict[str, str] = {}
        self.quota_h: tuple[float, float] | None = None  # (used, total) the service reports, None: no quota answer
        self.refused: list[str] = []
        self.asked: list[str] = []  # datasets whose status was asked
        self.busy_peak = 0
        self._scratch = Path(tempfile.mkdtemp(prefix="fake-kaggle-"))
        weakref.finalize(self, shutil.rmtree, self._scratch, True)  # no folder left behind per test

    def username(self) -> str | None:
        return self.user

    # ---- datasets ----------------------------------------------------------------------------------
    def dataset_status(self, dataset_id: str) -> tuple[str, int | None]:
        _client().validate_dataset_string(dataset_id)
        self.asked.append(dataset_id)
        if dataset_id not in self.datasets:
            return MISSING, None
        queue = self.dataset_state.get(dataset_id, [])
        state = queue.pop(0) if len(queue) > 1 else (queue[0] if queue else "ready")
        version = self.datasets[dataset_id]
        return state, version if state == "ready" else (version - 1 or None)

    def _dataset_meta(self, folder: Path) -> dict:
        meta = json.loads((folder / "dataset-metadata.json").read_text())
        owner, slug = meta["id"].split("/")
        if owner != self.user:
            raise KaggleApiError(f"Kaggle refused: {owner} is not the authenticated user {self.user}")
        if not 6 <= len(slug) <= 50 or not 6 <= len(meta["title"]) <= 50 or len(meta["licenses"]) != 1:
            raise KaggleApiError("The dataset slug and title must be between 6 and 50 characters, with one license")
        if meta["licenses"][0]["name"] not in rules.LICENCES:
            raise KaggleApiError(f"Kaggle refused: unknown license {meta['licenses'][0]['name']!r}")
        return meta

    def _new_version(self, folder: Path, dir_mode: str, ref: str) -> None:
        sent = sorted(p.name for p in folder.iterdir() if p.name != "dataset-metadata.json"
                      and (p.is_file() or dir_mode in ("zip", "tar")))  # the client skips folders by default
        self.uploads.append((ref, dir_mode, sent))
        self.datasets[ref] = self.datasets.get(ref, 0) + 1
        end = "failed" if ref in self.fail_next else "ready"
        self.fail_next.discard(ref)
        self.dataset_state[ref] = [PROCESSING] * self.process_polls + [end]

    def create_dataset(self, folder: Path, dir_mode: str = "skip") -> None:
        meta = self._dataset_meta(folder)
        if meta["id"] in self.datasets:
            raise KaggleApiError(f"Kaggle refused: the slug {meta['id']} is already in use")
        self._new_version(folder, dir_mode, meta["id"])

    def version_dataset(self, folder: Path, notes: str, dir_mode: str = "skip") -> None:
        meta = self._dataset_meta(folder)
        if meta["id"] not in self.datasets:
            raise KaggleApiError(f"Kaggle refused: no dataset {meta['id']} to version")
        self._new_version(folder, dir_mode, meta["id"])

    # ---- kernels -----------------------------------------------------------------------------------
    def busy(self) -> int:
        return sum(1 for k in self.kernels.values() if k["state"] in ("queued", "running"))

    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> Pushed:
        from slugify import slugify

        client = _client()
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        client.validate_kernel_string(meta["id"])
        owner, slug = meta["id"].split("/")
        if len(meta["title"]) < 5 or slugify(meta["title"]) != slug:
            raise KaggleApiError("Your kernel title does not resolve to the specified id")
        if meta["language"] not in client.valid_push_language_types or \
                meta["kernel_type"] not in client.valid_push_kernel_types:
            raise KaggleApiError("A valid language and kernel type must be specified in the metadata")
        if meta.get("docker_image_pinning_type") not in (None, *client.valid_push_pinning_types):
            raise KaggleApiError("If specified, the docker_image_pinning_type must be one of "
                                 f"{client.valid_push_pinning_types}")
        if (accelerator and accelerator not in rules.ACCELERATORS) or len(slug) > 50 or owner != self.user:
            raise KaggleApiError(f"Kaggle refused kernel {slug}: accelerator {accelerator!r}, owner {owner}")
        if not (folder / meta["code_file"]).is_file():
            raise KaggleApiError("Source file not found")
        assert self.kernels.get(meta["id"], {}).get("state") not in ("queued", "running"), "pushed while it runs"
        if meta["enable_gpu"] and self.busy() >= self.gpu_sessions:
            self.refused.append(meta["id"])
            raise SessionLimitError(f"Kaggle refused kernel {slug}: Maximum batch GPU session count of "
                                    f"{self.gpu_sessions} reached.")
        invalid = []
        for ref in meta["dataset_sources"]:
            client.validate_dataset_string(ref)
            parts = ref.split("/")
            name = "/".join(parts[:2])
            known = name in self.datasets and (len(parts) == 2 or int(parts[2]) <= self.datasets[name])
            if not known or self.dataset_state.get(name, ["ready"])[-1] != "ready":
                invalid.append(ref)
        nb = nbformat.read(folder / meta["code_file"], as_version=4)
        version = sum(1 for p in self.pushed if p[0] == meta["id"]) + 1
        self.pushed.append((meta["id"], accelerator, timeout_s, meta))
        self.kernels[meta["id"]] = {"state": "queued", "polls": 0, "values": parameters.values(nb),
                                    "invalid": invalid, "version": version}
        self.busy_peak = max(self.busy_peak, self.busy())
        return Pushed(f"https://www.kaggle.com/code/{meta['id']}", version,
                      f"invalid dataset sources: {invalid}" if invalid else "")

    def kernel_status(self, kernel_id: str) -> tuple[str, str]:
        if kernel_id in self.states:  # a state the test sets
            if kernel_id in self.kernels:
                self.kernels[kernel_id]["state"] = self.states[kernel_id]
            return self.states[kernel_id], ""
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            if kernel_id in self.outputs:  # a kernel given by its outputs only
                return "complete", ""
            return MISSING, f"Kaggle does not know {kernel_id} (never pushed, or deleted)"
        kernel["polls"] += 1
        if kernel["state"] == "queued" and kernel["polls"] > 1:
            kernel["state"] = "running"
        if kernel["state"] == "running" and kernel["polls"] > 1 + self.run_polls:
            self._end(kernel_id, kernel)
        return kernel["state"], kernel.get("message", "")

    def _end(self, kernel_id: str, kernel: dict) -> None:
        if kernel["invalid"]:
            kernel["state"], kernel["message"] = "error", f"dataset {kernel['invalid'][0]} is not attached"
            return
        kernel["state"] = "complete"
        if self.session is not None:
            dest = self._scratch / kernel_id.replace("/", "_") / str(kernel["version"])
            if self.session(kernel_id, kernel["values"], dest) == "error":
                kernel["state"], kernel["message"] = "error", "the kernel stopped in its install cell"
            self.outputs[kernel_id] = dest

    def download_output(self, kernel_id: str, dest: Path) -> list[Path]:
        self.downloads.append(kernel_id)
        if kernel_id not in self.kernels and kernel_id not in self.outputs:
            raise KaggleApiError(f"Kaggle: the output of {kernel_id}: Cannot access kernel '{kernel_id}'")
        src = self.outputs.get(kernel_id)
        if src is None:
            return []
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return [dest / p.relative_to(src) for p in Path(src).rglob("*") if p.is_file()]

    def kernel_logs(self, kernel_id: str) -> str:
        return self.logs.get(kernel_id, "")

    def quota(self):
        from vadbench.launch.kaggle.api import Quota

        return None if self.quota_h is None else Quota(*self.quota_h)


def owned_params(src: Path | str, dest: Path | str, owner: str = "tester", **changes) -> tuple[str, tuple[str, ...]]:
    """A copy of Kaggle params whose mounts are the owner's (not the shipped placeholder's), with changes;
    (its path, the datasets it mounts) for FakeKaggle(existing=...)."""
    import yaml

    from vadbench.launch.kaggle.spec import NO_OWNER

    spec = yaml.safe_load(Path(src).read_text())
    spec["mounts"] = {k: v.replace(NO_OWNER, owner) for k, v in spec.get("mounts", {}).items()}
    spec.update(changes)
    Path(dest).write_text(yaml.safe_dump(spec))
    return str(dest), tuple(sorted({"/".join(v.split("/")[:2]) for v in spec["mounts"].values()}))


def finishing_sessions(defer: dict[str, int] | None = None, empty: tuple[str, ...] = (),
                       drop: tuple[str, ...] = ()) -> Callable[[str, dict, Path], str | None]:
    """A session writer: every run of the pushed notebook finishes, its record and executed notebook written where
    a kernel writes them, and shard_status.json beside; except the last `defer[slug-start]` runs of a shard's first
    session (deferred), kernels whose slug starts with one of `empty` (no output at all: the session errors), and
    records of the
    run labels in `drop` (listed finished, record not written)."""
    from vadbench import records
    from vadbench.config import find_run, load_experiment

    sessions: dict[str, int] = {}

    def write(kernel_id: str, values: dict, dest: Path) -> str | None:
        slug = kernel_id.split("/")[1]
        sessions[slug] = sessions.get(slug, 0) + 1
        dest.mkdir(parents=True, exist_ok=True)
        if slug.startswith(empty):
            return "error"
        exp_file = dest.parent / f"{slug}-{sessions[slug]}.yaml"
        exp_file.write_text(values["experiment_yaml"])
        exp = load_experiment(exp_file)
        runs = [find_run(exp, m, d, c, int(s)) for m, d, c, s in values["runs"]]
        held = next((n for start, n in (defer or {}).items() if slug.startswith(start)), 0) if sessions[slug] == 1 else 0
        finished, deferred = runs[:len(runs) - held], runs[len(runs) - held:]
        for run in finished:
            if run.label in drop:
                continue
            folder = records.run_dir(dest / "runs", run.experiment, run.model.name, run.dataset.name, run.category,
                                     run.seed)
            records.write_record(folder, {"status": "ok", "error": None, "experiment": run.experiment,
                                          "model": run.model.name, "dataset": run.dataset.name,
                                          "category": run.category, "seed": run.seed, "config_hash": run.config_hash,
                                          "config": run.config(), "metrics": {"image_auroc": 0.75}})
            (folder / records.NOTEBOOK_FILE).write_text('{"cells": []}')
        records.write_json_atomic(dest / records.SHARD_STATUS_FILE, {
            "finished": [r.label for r in finished], "failed": [], "deferred": [r.label for r in deferred],
            "deadline_s": values["deadline_s"], "seconds_per_step": 0.5})
        return None

    return write
