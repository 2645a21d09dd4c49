"""The network boundary of the Kaggle launcher: our calls into the kaggle client (kaggle 2.x), nothing else.

Credentials: only the kaggle package reads them (~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY).
Tests replace `KaggleApiBoundary` by a fake with the same `KaggleApi` protocol.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vadbench.errors import KaggleSetupError


class KaggleApi(Protocol):
    """The network boundary (the real one wraps kaggle's KaggleApi; tests pass a fake)."""

    def username(self) -> str | None: ...
    def dataset_exists(self, dataset_id: str) -> bool: ...
    def create_dataset(self, folder: Path) -> None: ...
    def version_dataset(self, folder: Path, notes: str) -> None: ...
    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> str: ...
    def kernel_status(self, kernel_id: str) -> tuple[str, str]: ...
    def download_output(self, kernel_id: str, dest: Path) -> list[Path]: ...


class KaggleApiBoundary:
    """Thin wrapper over kaggle's KaggleApi (kaggle 2.x). Imported and authenticated on first use only."""

    def __init__(self) -> None:
        self._api = None

    def _client(self):
        if self._api is None:
            try:  # kaggle's package __init__ tries to authenticate on import and swallows failures
                from kaggle.api.kaggle_api_extended import KaggleApi as _Api
                api = _Api()
                api.authenticate()
            except SystemExit:
                raise KaggleSetupError("no Kaggle credentials: put kaggle.json in ~/.kaggle/ or set "
                                       "KAGGLE_USERNAME and KAGGLE_KEY") from None
            self._api = api
        return self._api

    def username(self) -> str | None:
        return self._client().config_values.get("username")

    def dataset_exists(self, dataset_id: str) -> bool:
        try:
            self._client().dataset_status(dataset_id)
            return True
        except Exception:  # kaggle raises HTTP errors for an unknown dataset
            return False

    def create_dataset(self, folder: Path) -> None:
        self._client().dataset_create_new(str(folder), public=False, quiet=True, convert_to_csv=False)

    def version_dataset(self, folder: Path, notes: str) -> None:
        self._client().dataset_create_version(str(folder), notes, quiet=True, convert_to_csv=False)

    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> str:
        response = self._client().kernels_push(str(folder), timeout=str(timeout_s), acc=accelerator)
        if getattr(response, "error", None):
            raise KaggleSetupError(f"Kaggle refused {folder.name}: {response.error}")
        return str(getattr(response, "url", ""))

    def kernel_status(self, kernel_id: str) -> tuple[str, str]:
        response = self._client().kernels_status(kernel_id)
        state = str(getattr(response, "status", "unknown")).rsplit(".", 1)[-1].lower()
        return state, str(getattr(response, "failure_message", "") or "")

    def download_output(self, kernel_id: str, dest: Path) -> list[Path]:
        files, _ = self._client().kernels_output(kernel_id, str(dest), force=False, quiet=True)
        return [Path(f) for f in files]
