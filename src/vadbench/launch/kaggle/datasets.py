"""The Kaggle datasets a push depends on: the preflight of every dataset a kernel attaches and of the code
dataset (before anything is uploaded), an upload (create or new version) and the wait until it is ready."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle.api import DATASET_FAILED, MISSING, KaggleApi, KaggleApiError
from vadbench.launch.kaggle.spec import NO_OWNER, KaggleSpec

log = logging.getLogger(__name__)
FIRST_POLL_S = 1.0  # the first wait for a dataset version's processing
UPLOAD_HINT = "`vadbench kaggle upload-data KIND ROOT --slug SLUG` uploads a dataset and prints the `mounts:` line"


def attached(folders: list[Path]) -> list[str]:
    """owner/slug of every input dataset the kernels in these folders attach (the code dataset left out)."""
    refs: list[str] = []
    for folder in folders:
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text(encoding="utf-8"))
        for ref in meta["dataset_sources"][1:]:
            base = "/".join(ref.split("/")[:2])
            if base not in refs:
                refs.append(base)
    return refs


def _named(spec: KaggleSpec) -> dict[str, str]:
    """owner/slug -> the Kaggle params entry that names it, for messages."""
    named: dict[str, list[str]] = {}
    for key, target in spec.mounts.items():
        named.setdefault("/".join(target.split("/")[:2]), []).append(f"mount {key} -> {target}")
    if spec.teacher_weights:
        named.setdefault("/".join(spec.teacher_weights.split("/")[:2]), []).append(
            f"teacher_weights {spec.teacher_weights}")
    return {ref: ", ".join(texts) for ref, texts in named.items()}


def check_sources(api: KaggleApi, spec: KaggleSpec, owner: str, folders: list[Path]) -> None:
    """Check every dataset these kernels attach and the code dataset through the API, before any upload.

    The shipped placeholder owner is refused by name before any call; then each dataset must be known to
    the service and ready, and the owner must be the authenticated user. KaggleSetupError lists every problem.
    """
    named, refs = _named(spec), attached(folders)
    placeholders = [named.get(r, r) for r in refs if r.split("/")[0] == NO_OWNER]
    if owner == NO_OWNER:
        placeholders.insert(0, "owner: no Kaggle user name (set owner in the Kaggle params or KAGGLE_USERNAME)")
    if placeholders:
        raise KaggleSetupError(f"nothing uploaded: {'; '.join(placeholders)}: {NO_OWNER!r} is the shipped placeholder owner; "
                               f"{UPLOAD_HINT} to put in the Kaggle params")
    problems = []
    user = api.username()
    if user and user != owner:
        problems.append(f"owner {owner!r} is not the authenticated user {user!r} (the code dataset and kernels are "
                        "created under your account)")
    for ref in refs:
        state, _ = api.dataset_status(ref)
        if state == MISSING:
            problems.append(f"{named.get(ref, ref)}: Kaggle does not know {ref} (a wrong slug, or another account's "
                            "private dataset)")
        elif state in DATASET_FAILED:
            problems.append(f"{named.get(ref, ref)}: {ref} is {state} on Kaggle; upload it again")
        elif state != "ready":
            problems.append(f"{named.get(ref, ref)}: {ref} is not ready yet ({state}); try again when it is")
    if problems:
        raise KaggleSetupError(f"nothing uploaded: {'; '.join(problems)}. {UPLOAD_HINT}")
    code = f"{owner}/{spec.code_dataset}"
    state, version = api.dataset_status(code)
    log.info("preflight: %d attached dataset(s) ready; code dataset %s: %s", len(refs), code,
             "not on Kaggle yet, uploaded next" if state == MISSING else f"{state}, version {version}")


def wait_ready(api: KaggleApi, dataset_id: str, before: int | None, wait_s: float, poll_s: float,
               sleep: Callable[[float], None] = time.sleep) -> int:
    """Wait until the dataset's version after `before` is ready; its number. A failed or deleted version stops it.
    The status is asked after 1 s, then at doubling intervals up to `poll_s` (a small upload is ready in seconds)."""
    waited, pause = 0.0, min(FIRST_POLL_S, poll_s)
    while True:
        state, version = api.dataset_status(dataset_id)
        if state == "ready" and version and version > (before or 0):
            log.info("dataset %s version %d is ready", dataset_id, version)
            return int(version)
        if state in DATASET_FAILED:
            raise KaggleApiError(f"Kaggle could not process dataset {dataset_id}: the new version is {state}; "
                                 "upload it again")
        if waited >= wait_s:
            raise KaggleApiError(f"dataset {dataset_id} not ready after {wait_s:.0f} s (status {state}, version "
                                 f"{version}); raise dataset_wait_s in the Kaggle params or try again later")
        sleep(pause)
        waited += pause
        pause = min(2 * pause, poll_s)


def upload(api: KaggleApi, folder: Path, dataset_id: str, notes: str, wait_s: float, poll_s: float,
           dir_mode: str = "skip", sleep: Callable[[float], None] = time.sleep) -> int:
    """Create the dataset (or a new version of it) from folder and wait until that version is ready; its number."""
    state, before = api.dataset_status(dataset_id)
    if state == MISSING:
        api.create_dataset(folder, dir_mode=dir_mode)
        before = 0
    else:
        api.version_dataset(folder, notes, dir_mode=dir_mode)
    return wait_ready(api, dataset_id, before, wait_s, poll_s, sleep)
