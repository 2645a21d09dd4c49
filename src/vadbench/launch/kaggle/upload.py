"""Put a dataset on Kaggle for the shards to mount: `vadbench kaggle upload-data KIND ROOT --slug S`.

The dataset is checked first (`vadbench data check`'s code: layout, masks, counts); then a folder under
`<out>/uploads/<slug>/` holds dataset-metadata.json and a link to each top-level entry of ROOT (ROOT
itself is not written to), and the kaggle client uploads it with `dir_mode="zip"`: each sub-folder as one
archive, which Kaggle unpacks under the same name (the client's default, "skip", leaves folders out).
A new dataset is created, an existing one gets a new version; then it waits until that version is
ready (a failed or deleted version stops it) and returns the `mounts:` entry the Kaggle params need:
ROOT as the experiment's params name it (relative to the project root, or absolute) -> owner/slug.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle import datasets, rules
from vadbench.launch.kaggle.api import KaggleApi, KaggleApiBoundary
from vadbench.launch.kaggle.spec import NO_OWNER, load_kaggle_spec, resolve_owner

log = logging.getLogger(__name__)
DIR_MODE = "zip"  # the client's dir_mode: sub-folders uploaded as archives, unpacked by Kaggle


def staging_folder(root: Path, folder: Path, meta: dict) -> Path:
    """The upload folder: dataset-metadata.json and one link per top-level entry of root (hidden ones left out)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for entry in sorted(root.iterdir()):
        if not entry.name.startswith(".") and entry.name != "dataset-metadata.json":
            (folder / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
    (folder / "dataset-metadata.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def mounts_entry(root: Path | str, dataset_id: str) -> str:
    """The line under `mounts:` in the Kaggle params: the root as the params name it -> owner/slug."""
    return f"{Path(root).as_posix().rstrip('/')}: {dataset_id}"


def upload_data(kind: str, root: Path | str, slug: str, kaggle_params: Path | str | None = None,
                out_root: Path | str = "outputs/kaggle", title: str | None = None, licence: str = "other",
                categories: list[str] | None = None, api: KaggleApi | None = None, wait_s: float = 3600.0,
                poll_s: float = 30.0) -> str:
    """Check, upload and wait for a dataset; the `mounts:` entry for the Kaggle params."""
    from vadbench.data import checks

    spec = load_kaggle_spec(kaggle_params)
    api = api or KaggleApiBoundary()
    owner = resolve_owner(spec, api)
    if owner == NO_OWNER:
        raise KaggleSetupError("no Kaggle user name: set owner in the Kaggle params or KAGGLE_USERNAME")
    meta = {"title": title or slug, "id": f"{owner}/{slug}", "licenses": [{"name": licence}], "isPrivate": True}
    rules.check_dataset_metadata(meta)
    found = checks.check_dataset(kind, Path(root), categories)
    log.info("%s", found.table())
    found.raise_if_failed()
    folder = staging_folder(Path(root), Path(out_root) / "uploads" / slug, meta)
    version = datasets.upload(api, folder, meta["id"], f"vadbench upload-data {kind} from {Path(root).name}",
                              wait_s, poll_s, dir_mode=DIR_MODE)
    entry = mounts_entry(root, meta["id"])
    log.info("%s version %d is ready; in the Kaggle params (%s), under mounts:\n  %s", meta["id"], version,
             kaggle_params or "params/kaggle/kaggle.yaml", entry)
    return entry
