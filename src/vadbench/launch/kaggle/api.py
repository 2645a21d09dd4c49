"""The network boundary of the Kaggle launcher: our calls into the kaggle client (kaggle>=2.2.2), nothing else.

The client returns most service errors in its response objects instead of raising them; every call
here checks its response and raises KaggleApiError with the service's message. What the client raises
is read as the client itself reads it: an HTTP 404, or a 401/403 (which the client reports as "most
likely a wrong slug"), means the service does not know the slug (`MISSING`); "Maximum batch GPU
session count" is `SessionLimitError`; a connection error, 429 or 5xx is `KaggleUnavailable` (try again
later). States are the names of the client's own enums, lowercased (`KERNEL_STATES`, `DATASET_STATES`,
tests/test_kaggle_api.py checks them against kagglesdk). Credentials: only the kaggle package reads
them (~/.kaggle/kaggle.json, ~/.kaggle/access_token or KAGGLE_USERNAME/KAGGLE_KEY). Tests replace
`KaggleApiBoundary` by a fake with the same `KaggleApi` protocol.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vadbench.errors import KaggleSetupError

#: kagglesdk's KernelWorkerStatus, lowercased: a kernel's session state.
KERNEL_STATES = ("queued", "running", "complete", "error", "cancel_requested", "cancel_acknowledged", "new_script")
#: kagglesdk's DatabundleVersionStatus, lowercased, as the client's dataset_status returns it.
DATASET_STATES = ("not_yet_persisted", "blobs_received", "blobs_decompressed", "blobs_copied_to_sds",
                  "individual_blobs_compressed", "ready", "failed", "deleted", "reprocessing")
DATASET_FAILED = ("failed", "deleted")  # a version that will never be ready
MISSING = "missing"  # the service does not know the slug
SESSION_LIMIT = "Maximum batch GPU session count"  # the service's refusal when the account's GPU sessions are all busy


class KaggleApiError(KaggleSetupError):
    """The Kaggle service refused a request; the message is the service's."""


class SessionLimitError(KaggleApiError):
    """The account runs as many GPU sessions as Kaggle allows: push again when one ends."""


class KaggleUnavailable(KaggleApiError):
    """The service could not be reached or asked us to wait (connection error, 429, 5xx): try again later."""


@dataclass(frozen=True)
class Pushed:
    """The service's answer to a push it took: the kernel's URL and version, and the sources it left out."""

    url: str
    version: int | None = None
    invalid: str = ""  # e.g. "invalid dataset sources: [...]": saved and started without them (it will fail)


@dataclass(frozen=True)
class Quota:
    """The account's weekly GPU quota, as the service reports it."""

    used_h: float
    total_h: float
    refresh: str = ""  # when the quota resets (ISO time), if the service says

    @property
    def left_h(self) -> float:
        return max(0.0, self.total_h - self.used_h)


class KaggleApi(Protocol):
    """The network boundary (the real one wraps kaggle's KaggleApi; tests pass a fake)."""

    def username(self) -> str | None: ...
    def dataset_status(self, dataset_id: str) -> tuple[str, int | None]: ...
    def create_dataset(self, folder: Path, dir_mode: str = "skip") -> None: ...
    def version_dataset(self, folder: Path, notes: str, dir_mode: str = "skip") -> None: ...
    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> Pushed: ...
    def kernel_status(self, kernel_id: str) -> tuple[str, str]: ...
    def download_output(self, kernel_id: str, dest: Path) -> list[Path]: ...
    def kernel_logs(self, kernel_id: str) -> str: ...
    def quota(self) -> Quota | None: ...


def invalid_sources(response: Any) -> str:
    """The sources (and tags) a response says the service left out, as one line; "" when none."""
    invalid = {name[len("invalid_"):]: value for name in ("invalid_tags", "invalid_dataset_sources",
               "invalid_kernel_sources", "invalid_competition_sources", "invalid_model_sources")
               if (value := getattr(response, name, None))}
    return "; ".join(f"invalid {k.replace('_', ' ')}: {v}" for k, v in invalid.items())


def check_response(response: Any, what: str, sources_too: bool = True) -> Any:
    """Raise KaggleApiError when a client response carries an error (or, with sources_too, invalid sources or tags);
    SessionLimitError for the GPU session limit. Else return it."""
    detail = getattr(response, "error", None) or (invalid_sources(response) if sources_too else "")
    if detail:
        kind = SessionLimitError if SESSION_LIMIT in str(detail) else KaggleApiError
        raise kind(f"Kaggle refused {what}: {detail}")
    return response


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of a client error (requests' HTTPError carries its response), else None."""
    return getattr(getattr(exc, "response", None), "status_code", None)


def unknown_slug(exc: BaseException) -> bool:
    """True when the service does not know a slug: 404, or 401/403 (raised as is, or as the client's ValueError)."""
    return http_status(exc) in (401, 403, 404) or (isinstance(exc, ValueError) and "Cannot access kernel" in str(exc))


def service_error(what: str, exc: BaseException) -> KaggleApiError:
    """The KaggleApiError for a client exception: KaggleUnavailable for a connection error, 429 or 5xx."""
    import requests

    status = http_status(exc)
    transient = isinstance(exc, requests.exceptions.ConnectionError) or status == 429 or (status or 0) >= 500
    return (KaggleUnavailable if transient else KaggleApiError)(f"Kaggle: {what}: {exc}")


def state_name(value: Any) -> str:
    """A client enum member (or its text) as our lowercase state name."""
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1].lower()


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
        """(state, current version) of a dataset; (MISSING, None) when the service does not know it."""
        try:
            payload = json.loads(self._client().dataset_status(dataset_id, format="json"))
        except Exception as exc:  # the client raises the HTTP error of an unknown dataset as it comes
            if unknown_slug(exc):
                return MISSING, None
            raise service_error(f"the status of dataset {dataset_id}", exc) from exc
        return state_name(payload.get("status", "unknown")), payload.get("current_version_number")

    def create_dataset(self, folder: Path, dir_mode: str = "skip") -> None:
        try:
            response = self._client().dataset_create_new(str(folder), public=False, quiet=True, convert_to_csv=False,
                                                         dir_mode=dir_mode)
        except (ValueError, OSError) as exc:
            raise KaggleApiError(f"Kaggle: creating the dataset in {folder}: {exc}") from exc
        check_response(response, f"creating the dataset in {folder}")

    def version_dataset(self, folder: Path, notes: str, dir_mode: str = "skip") -> None:
        try:
            response = self._client().dataset_create_version(str(folder), notes, quiet=True, convert_to_csv=False,
                                                             dir_mode=dir_mode)
        except (ValueError, OSError) as exc:
            raise KaggleApiError(f"Kaggle: a new version of the dataset in {folder}: {exc}") from exc
        check_response(response, f"a new version of the dataset in {folder}")

    def push_kernel(self, folder: Path, accelerator: str, timeout_s: int) -> Pushed:
        """Push a kernel folder (save and run) on this machine shape ("": none, a CPU session). SessionLimitError when
        the account's GPU sessions are all busy; sources the service left out (the kernel is saved and runs without
        them) come back in `invalid`."""
        try:
            response = self._client().kernels_push(str(folder), timeout=str(timeout_s), acc=accelerator or None)
        except ValueError as exc:  # the client's own metadata checks
            raise KaggleApiError(f"the kaggle client refused {folder.name}: {exc}") from exc
        except Exception as exc:
            raise service_error(f"pushing {folder.name}", exc) from exc
        if response is None:
            raise KaggleApiError(f"Kaggle refused {folder.name}: no response (see the client's output above)")
        response = check_response(response, f"kernel {folder.name}", sources_too=False)
        return Pushed(str(response.url or ""), getattr(response, "version_number", None), invalid_sources(response))

    def kernel_status(self, kernel_id: str) -> tuple[str, str]:
        """(state, failure message) of a kernel's latest session; (MISSING, reason) for a slug the service does not know."""
        try:
            response = self._client().kernels_status(kernel_id)
        except Exception as exc:
            if unknown_slug(exc):
                return MISSING, f"Kaggle does not know {kernel_id} (never pushed, deleted, or another account's)"
            raise service_error(f"the status of {kernel_id}", exc) from exc
        response = check_response(response, f"the status of {kernel_id}")
        return state_name(getattr(response, "status", "unknown")), str(getattr(response, "failure_message", "") or "")

    def download_output(self, kernel_id: str, dest: Path) -> list[Path]:
        """Every output file of the kernel's latest session (the client follows the pages) into dest."""
        try:
            files, _ = self._client().kernels_output(kernel_id, str(dest), force=True, quiet=True)
        except Exception as exc:
            raise service_error(f"the output of {kernel_id}", exc) from exc
        return [Path(f) for f in files]

    def kernel_logs(self, kernel_id: str) -> str:
        try:
            return str(self._client().kernels_logs(kernel_id) or "")
        except Exception as exc:
            raise service_error(f"the log of {kernel_id}", exc) from exc

    def quota(self) -> Quota | None:
        """The weekly GPU quota; None when the service does not report one (then drive estimates it)."""
        try:
            response = self._client().quota_view()
        except Exception as exc:
            if http_status(exc) in (404, 405, 501):
                return None
            raise service_error("the GPU quota", exc) from exc
        gpu = getattr(response, "gpu_quota", None)
        if gpu is None or not gpu.total_time_allowed:
            return None
        refresh = getattr(response, "quota_refresh_time", None)
        return Quota(gpu.time_used.total_seconds() / 3600, gpu.total_time_allowed.total_seconds() / 3600,
                     refresh.isoformat() if refresh else "")
