"""The network boundary of the Kaggle launcher: our calls into the kaggle client (kaggle>=2.2), nothing else.

The client returns most service errors in its response objects instead of raising them; every call
here checks its response and raises KaggleApiError with the service's message. Credentials: only the
kaggle package reads them (~/.kaggle/kaggle.json, ~/.kaggle/access_token or KAGGLE_USERNAME/KAGGLE_KEY).
Tests replace `KaggleApiBoundary` by a fake with the same `KaggleApi` protocol; tests/test_kaggle_api.py
checks each call below against the installed client's signatures.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from vadbench.errors import KaggleSetupError


class KaggleApiError(KaggleSetupError):
    """The Kaggle service refused a request; the message is the service's."""


class KaggleApi(Protocol):
    """The network boundary (the real one wraps kaggle's KaggleApi; tests pass a fake)."""

    def username(self) -> str | None: ...
    def dataset_status(self, dataset_id: str) -> tuple[str, int | None]: ...
    def create_dataset(self, folder: Path) -> None: ...
    def version_dataset(self, folder: Path, notes: str) -> None: ...
    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> str: ...
    def kernel_status(self, kernel_id: str) -> tuple[str, str]: ...
    def download_output(self, kernel_id: str, dest: Path) -> list[Path]: ...
    def kernel_logs(self, kernel_id: str) -> str: ...


def check_response(response: Any, what: str) -> Any:
    """Raise KaggleApiError when a client response carries an error (or invalid tags); else return it."""
    error = getattr(response, "error", None)
    invalid = {name[len("invalid_"):]: value for name in ("invalid_tags", "invalid_dataset_sources",
               "invalid_kernel_sources", "invalid_competition_sources", "invalid_model_sources")
               if (value := getattr(response, name, None))}
    if error or invalid:
        detail = error or "; ".join(f"invalid {k.replace('_', ' ')}: {v}" for k, v in invalid.items())
        raise KaggleApiError(f"Kaggle refused {what}: {detail}")
    return response


class KaggleApiBoundary:
    """Thin wrapper over kaggle's KaggleApi. Imported and authenticated on first use only."""

    def __init__(self) -> None:
        self._api = None

    def _client(self):
        if self._api is None:
            try:  # kaggle's package __init__ tries to authenticate on import and exits on failure
                from kaggle.api.kaggle_api_extended import KaggleApi as _Api
                api = _Api()
                api.authenticate()
            except SystemExit:
                raise KaggleSetupError("no Kaggle credentials: put kaggle.json in ~/.kaggle/ or set "
                                       "KAGGLE_USERNAME and KAGGLE_KEY") from None
            self._api = api
        return self._api

    def username(self) -> str | None:
        return self._client().get_config_value("username")

    def dataset_status(self, dataset_id: str) -> tuple[str, int | None]:
        """(status, current version) of a dataset; ("missing", None) when the service does not know it."""
        try:
            payload = json.loads(self._client().dataset_status(dataset_id, format="json"))
        except Exception as exc:  # the client raises an HTTP error for an unknown dataset
            if "404" in str(exc) or "not found" in str(exc).lower():
                return "missing", None
            raise KaggleApiError(f"Kaggle dataset status of {dataset_id}: {exc}") from exc
        return str(payload.get("status", "unknown")), payload.get("current_version_number")

    def create_dataset(self, folder: Path) -> None:
        response = self._client().dataset_create_new(str(folder), public=False, quiet=True, convert_to_csv=False)
        check_response(response, f"creating the dataset in {folder}")

    def version_dataset(self, folder: Path, notes: str) -> None:
        response = self._client().dataset_create_version(str(folder), notes, quiet=True, convert_to_csv=False)
        check_response(response, f"a new version of the dataset in {folder}")

    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> str:
        response = self._client().kernels_push(str(folder), timeout=str(timeout_s), acc=accelerator)
        if response is None:
            raise KaggleApiError(f"Kaggle refused {folder.name}: no response (see the client's output above)")
        return str(check_response(response, f"kernel {folder.name}").url or "")

    def kernel_status(self, kernel_id: str) -> tuple[str, str]:
        response = check_response(self._client().kernels_status(kernel_id), f"the status of {kernel_id}")
        state = str(getattr(response, "status", "unknown")).rsplit(".", 1)[-1].lower()
        return state, str(getattr(response, "failure_message", "") or "")

    def download_output(self, kernel_id: str, dest: Path) -> list[Path]:
        files, _ = self._client().kernels_output(kernel_id, str(dest), force=True, quiet=True)
        return [Path(f) for f in files]

    def kernel_logs(self, kernel_id: str) -> str:
        return str(self._client().kernels_logs(kernel_id) or "")
