"""A strict in-memory Kaggle service for tests: it refuses what the real client or service refuses.

The metadata rules are the installed kaggle client's own code (`validate_dataset_string`,
`validate_kernel_string`, its push language/type lists, python-slugify as the client uses it) and the
rules its `dataset_create_new` applies (slug and title 6-50 characters, exactly one licence); the
service-side rules (known accelerator and licence names, attached datasets that exist and are ready)
are the documented ones in vadbench.launch.kaggle.rules. A new dataset version is `pending` for
one status poll, then `ready`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from vadbench.launch.kaggle import rules
from vadbench.launch.kaggle.api import KaggleApiError


def _client():
    from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi.__new__(KaggleApi)  # not authenticated: only its validation methods are used


class FakeKaggle:
    """The API boundary, in memory: pushes are kept, outputs come from prepared folders."""

    def __init__(self, outputs: dict[str, Path] | None = None, states: dict[str, str] | None = None,
                 user: str = "tester", existing: tuple[str, ...] = ()) -> None:
        self.user = user
        self.datasets: dict[str, int] = {ref: 1 for ref in existing}
        self.pending: set[str] = set()
        self.pushed: list[tuple[str, str, int, dict]] = []
        self.outputs, self.states = outputs or {}, states or {}
        self.downloads: list[str] = []
        self.logs: dict[str, str] = {}

    def username(self) -> str | None:
        return self.user

    def dataset_status(self, dataset_id: str) -> tuple[str, int | None]:
        _client().validate_dataset_string(dataset_id)
        if dataset_id not in self.datasets:
            return "missing", None
        if dataset_id in self.pending:
            self.pending.discard(dataset_id)
            return "pending", self.datasets[dataset_id] - 1 or None
        return "ready", self.datasets[dataset_id]

    def _dataset_meta(self, folder: Path) -> dict:
        meta = json.loads((folder / "dataset-metadata.json").read_text())
        owner, slug = meta["id"].split("/")
        if owner != self.user:
            raise KaggleApiError(f"Kaggle refused: {owner} is not the authenticated user {self.user}")
        if not 6 <= len(slug) <= 50 or not 6 <= len(meta["title"]) <= 50 or len(meta["licenses"]) != 1:
            raise ValueError("The dataset slug and title must be between 6 and 50 characters, with one license")
        if meta["licenses"][0]["name"] not in rules.LICENCES:
            raise KaggleApiError(f"Kaggle refused: unknown license {meta['licenses'][0]['name']!r}")
        return meta

    def create_dataset(self, folder: Path) -> None:
        meta = self._dataset_meta(folder)
        if meta["id"] in self.datasets:
            raise KaggleApiError(f"Kaggle refused: the slug {meta['id']} is already in use")
        self.datasets[meta["id"]] = 1
        self.pending.add(meta["id"])

    def version_dataset(self, folder: Path, notes: str) -> None:
        meta = self._dataset_meta(folder)
        if meta["id"] not in self.datasets:
            raise KaggleApiError(f"Kaggle refused: no dataset {meta['id']} to version")
        self.datasets[meta["id"]] += 1
        self.pending.add(meta["id"])

    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> str:
        from slugify import slugify

        client = _client()
        meta = json.loads((folder / "kernel-metadata.json").read_text())
        client.validate_kernel_string(meta["id"])
        owner, slug = meta["id"].split("/")
        if len(meta["title"]) < 5 or slugify(meta["title"]) != slug:
            raise ValueError("Your kernel title does not resolve to the specified id")
        if meta["language"] not in client.valid_push_language_types or \
                meta["kernel_type"] not in client.valid_push_kernel_types:
            raise ValueError("A valid language and kernel type must be specified in the metadata")
        if accelerator not in rules.ACCELERATORS or len(slug) > 50 or owner != self.user:
            raise KaggleApiError(f"Kaggle refused kernel {slug}: accelerator {accelerator!r}, owner {owner}")
        for ref in meta["dataset_sources"]:
            client.validate_dataset_string(ref)
            parts = ref.split("/")
            name = "/".join(parts[:2])
            if name.split("/")[0] == self.user and (name not in self.datasets or name in self.pending or
                                                    (len(parts) == 3 and int(parts[2]) > self.datasets[name])):
                raise KaggleApiError(f"Kaggle refused kernel {slug}: dataset {ref} does not exist or is not ready")
        if not (folder / meta["code_file"]).is_file():
            raise ValueError("Source file not found")
        self.pushed.append((meta["id"], accelerator, timeout_s, meta))
        return f"https://www.kaggle.com/code/{meta['id']}"

    def kernel_status(self, kernel_id: str) -> tuple[str, str]:
        return self.states.get(kernel_id, "complete"), ""

    def download_output(self, kernel_id: str, dest: Path) -> list[Path]:
        self.downloads.append(kernel_id)
        src = self.outputs.get(kernel_id)
        if src is None:
            return []
        shutil.copytree(src, dest, dirs_exist_ok=True)
        return [p for p in dest.rglob("*") if p.is_file()]

    def kernel_logs(self, kernel_id: str) -> str:
        return self.logs.get(kernel_id, "")
