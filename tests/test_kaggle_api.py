"""Our calls into the kaggle client, checked offline against the installed client's real signatures.

A stand-in client binds every call to `inspect.signature` of the same method of
kaggle.api.kaggle_api_extended.KaggleApi (so a renamed or removed parameter fails here) and answers
with the client's own response types, errors included, which the boundary must raise.
"""
from __future__ import annotations

import inspect
import json
from importlib.metadata import version
from pathlib import Path

import pytest
import requests
from packaging.version import Version

from vadbench.launch.kaggle.api import KaggleApiBoundary, KaggleApiError, KaggleUnavailable, Pushed, SessionLimitError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def real():
    from kaggle.api.kaggle_api_extended import KaggleApi

    return KaggleApi


class SignatureClient:
    """Binds each call to the real method's signature, records it, and returns a prepared answer."""

    def __init__(self, real, answers: dict) -> None:
        self.real, self.answers, self.calls = real, answers, []

    def __getattr__(self, name):
        signature = inspect.signature(getattr(self.real, name))

        def call(*args, **kwargs):
            signature.bind(None, *args, **kwargs)  # TypeError on a parameter the client does not take
            self.calls.append((name, args, kwargs))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


def http_error(code: int) -> requests.HTTPError:
    """The error kagglesdk raises for an HTTP error status (requests' HTTPError carrying the response)."""
    response = requests.Response()
    response.status_code = code
    return requests.HTTPError(f"{code} {'Client' if code < 500 else 'Server'} Error", response=response)


def boundary(real, **answers) -> tuple[KaggleApiBoundary, SignatureClient]:
    api = KaggleApiBoundary()
    api._api = client = SignatureClient(real, answers)
    return api, client


def test_installed_client_is_the_required_one():
    requirement = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"kaggle' in line)
    assert requirement.strip().strip('",') == "kaggle>=2.2.2"  # 2.2.0/2.2.1 download only the first output page
    assert "kaggle>=2.2.2" in (ROOT / "environment.yml").read_text()
    assert Version(version("kaggle")) >= Version("2.2.2")


def test_every_call_matches_the_client_and_errors_are_raised(real, tmp_path):
    from kagglesdk.datasets.types.dataset_api_service import ApiCreateDatasetResponse
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusResponse, ApiSaveKernelResponse

    ok_dataset, bad_dataset = ApiCreateDatasetResponse(), ApiCreateDatasetResponse()
    bad_dataset.error = "The requested slug is already in use"
    saved, left_out, busy = ApiSaveKernelResponse(), ApiSaveKernelResponse(), ApiSaveKernelResponse()
    saved.url, saved.version_number = "https://www.kaggle.com/code/tester/x", 3
    left_out.invalid_dataset_sources = ["tester/missing"]
    busy.error = "Maximum batch GPU session count of 2 reached."
    state = ApiGetKernelSessionStatusResponse()
    state.failure_message = ""
    api, client = boundary(real, get_config_value="tester", dataset_create_new=ok_dataset,
                           dataset_create_version=bad_dataset, kernels_push=saved, kernels_status=state,
                           kernels_output=(["a/b.json"], ""), kernels_logs="log text",
                           dataset_status=json.dumps({"status": "ready", "current_version_number": 3}))
    assert api.username() == "tester"
    assert api.dataset_status("tester/vadbench-code") == ("ready", 3)
    api.create_dataset(tmp_path, dir_mode="zip")
    assert client.calls[-1][2]["dir_mode"] == "zip"
    with pytest.raises(KaggleApiError, match="already in use"):
        api.version_dataset(tmp_path, "notes")
    assert api.push_kernel(tmp_path, "NvidiaTeslaT4", 43200) == Pushed("https://www.kaggle.com/code/tester/x", 3)
    assert api.kernel_status("tester/shard-x") == ("queued", "")
    assert api.download_output("tester/shard-x", tmp_path) == [Path("a/b.json")]
    assert api.kernel_logs("tester/shard-x") == "log text"
    client.answers["kernels_push"] = left_out  # saved and started without it, as the service does
    assert api.push_kernel(tmp_path, "NvidiaTeslaT4", 43200).invalid == "invalid dataset sources: ['tester/missing']"
    client.answers["kernels_push"] = busy
    with pytest.raises(SessionLimitError, match="Maximum batch GPU session count of 2 reached"):
        api.push_kernel(tmp_path, "NvidiaTeslaT4", 43200)
    for code in (401, 403, 404):  # the service's answer to a slug it does not know (or will not show)
        client.answers["dataset_status"] = http_error(code)
        assert api.dataset_status("tester/vadbench-code") == ("missing", None)
    client.answers["dataset_status"] = http_error(500)
    with pytest.raises(KaggleUnavailable, match="500 Server Error"):
        api.dataset_status("tester/vadbench-code")
    client.answers["dataset_status"] = http_error(400)
    with pytest.raises(KaggleApiError, match="400 Client Error") as refused:
        api.dataset_status("tester/vadbench-code")
    assert not isinstance(refused.value, KaggleUnavailable)
    assert {c[0] for c in client.calls} == {"get_config_value", "dataset_status", "dataset_create_new",
                                            "dataset_create_version", "kernels_push", "kernels_status",
                                            "kernels_output", "kernels_logs"}


def test_a_call_the_client_does_not_take_fails_here(real):
    api, client = boundary(real, kernels_push=None)
    with pytest.raises(TypeError):
        client.kernels_push("folder", accelerator="NvidiaTeslaT4")  # the client's parameter is `acc`


# ---- the real client's own code, with kagglesdk's service calls answered in memory ------------------------------

class Transport:
    """Stands in for kagglesdk's KaggleClient under the real client: each service call answers from `answers`
    (an answer, an exception to raise, or a function of the request)."""

    def __init__(self, answers: dict) -> None:
        self.answers, self.calls = answers, []

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False

    def __getattr__(self, name):
        if name in ("kernels", "datasets", "kernels_api_client", "dataset_api_client"):
            return self

        def call(request):
            self.calls.append((name, request))
            answer = self.answers[name]
            answer = answer(request) if callable(answer) and not isinstance(answer, type) else answer
            if isinstance(answer, Exception):
                raise answer
            return answer

        return call


@pytest.fixture()
def through_client(real, monkeypatch):
    """A boundary over the installed client (not authenticated) whose kagglesdk calls go to a Transport."""
    client = real()
    client.config_values = {"username": "tester"}
    transport = Transport({})
    monkeypatch.setattr(client, "build_kaggle_client", lambda: transport)
    api = KaggleApiBoundary()
    api._api = client
    return api, transport


def test_states_are_the_clients_own_enums():
    from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    from vadbench.launch.kaggle import api, manifest

    assert api.KERNEL_STATES == tuple(m.name.lower() for m in KernelWorkerStatus)
    assert api.DATASET_STATES == tuple(m.name.lower() for m in DatabundleVersionStatus)
    assert set(api.DATASET_FAILED) <= set(api.DATASET_STATES) and set(manifest.FROM_KERNEL) == set(api.KERNEL_STATES)


def test_unknown_slugs_states_and_quota_as_the_client_raises_and_returns_them(through_client):
    from datetime import datetime, timedelta

    from kagglesdk.datasets.types.dataset_api_service import ApiDataset, ApiGetDatasetStatusResponse
    from kagglesdk.datasets.types.dataset_enums import DatabundleVersionStatus
    from kagglesdk.kernels.types.kernels_api_service import (
        ApiAcceleratorQuota,
        ApiGetAcceleratorQuotaStatisticsResponse,
        ApiGetKernelSessionStatusResponse,
    )
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    api, transport = through_client
    for code in (401, 403):  # the client turns these into its ValueError "... most likely a wrong kernel slug"
        transport.answers["get_kernel_session_status"] = http_error(code)
        state, message = api.kernel_status("tester/never-pushed")
        assert state == "missing" and "never pushed" in message
    transport.answers["get_kernel_session_status"] = http_error(404)
    assert api.kernel_status("tester/never-pushed")[0] == "missing"
    running = ApiGetKernelSessionStatusResponse()
    running.status = KernelWorkerStatus.CANCEL_ACKNOWLEDGED
    transport.answers["get_kernel_session_status"] = running
    assert api.kernel_status("tester/shard-x") == ("cancel_acknowledged", "")

    failed, dataset = ApiGetDatasetStatusResponse(), ApiDataset()
    failed.status, dataset.current_version_number = DatabundleVersionStatus.FAILED, 3
    transport.answers.update(get_dataset_status=failed, get_dataset=dataset)
    assert api.dataset_status("tester/vadbench-code") == ("failed", 3)
    transport.answers["get_dataset_status"] = http_error(403)  # the client passes this one through as it comes
    assert api.dataset_status("someone/private-data") == ("missing", None)

    quota, gpu = ApiGetAcceleratorQuotaStatisticsResponse(), ApiAcceleratorQuota()
    gpu.time_used, gpu.total_time_allowed = timedelta(hours=12, minutes=30), timedelta(hours=30)
    quota.gpu_quota, quota.quota_refresh_time = gpu, datetime(2030, 1, 5)
    transport.answers["get_accelerator_quota_statistics"] = quota
    got = api.quota()
    assert (got.used_h, got.total_h, got.left_h, got.refresh) == (12.5, 30.0, 17.5, "2030-01-05T00:00:00")
    transport.answers["get_accelerator_quota_statistics"] = http_error(404)  # a service without the call
    assert api.quota() is None


def test_all_pages_of_a_kernels_output_are_downloaded(through_client, tmp_path):
    """45 output files in pages of 20, as the service lists them; each file fetched over HTTP from its URL."""
    import functools
    import http.server
    import threading

    from kagglesdk.kernels.types.kernels_api_service import ApiKernelSessionOutputFile, ApiListKernelSessionOutputResponse

    served = tmp_path / "served"
    served.mkdir()
    for i in range(45):
        (served / f"f{i}.json").write_text(json.dumps({"i": i}))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def page(request):
        start = int(request.page_token or 0)
        response = ApiListKernelSessionOutputResponse()
        files = []
        for i in range(start, min(start + request.page_size, 45)):
            item = ApiKernelSessionOutputFile()
            item.file_name, item.url = f"runs/r{i}/f{i}.json", f"http://127.0.0.1:{server.server_port}/f{i}.json"
            files.append(item)
        response.files, response.log = files, "the kernel's log"
        response.next_page_token = str(start + request.page_size) if start + request.page_size < 45 else ""
        return response

    api, transport = through_client
    transport.answers["list_kernel_session_output"] = page
    try:
        got = api.download_output("tester/shard-x", tmp_path / "out")
    finally:
        server.shutdown()
    assert [c[1].page_size for c in transport.calls] == [20, 20, 20]
    assert sorted(p.name for p in got) == sorted([f"f{i}.json" for i in range(45)] + ["shard-x.log"])
    assert all(json.loads((tmp_path / "out" / f"runs/r{i}/f{i}.json").read_text()) == {"i": i} for i in range(45))
