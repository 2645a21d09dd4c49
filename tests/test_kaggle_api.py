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
from packaging.version import Version

from vadbench.launch.kaggle.api import KaggleApiBoundary, KaggleApiError

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


def boundary(real, **answers) -> tuple[KaggleApiBoundary, SignatureClient]:
    api = KaggleApiBoundary()
    api._api = client = SignatureClient(real, answers)
    return api, client


def test_installed_client_is_the_required_one():
    requirement = next(line for line in (ROOT / "pyproject.toml").read_text().splitlines() if '"kaggle' in line)
    assert requirement.strip().strip('",') == "kaggle>=2.2"
    assert "kaggle>=2.2" in (ROOT / "environment.yml").read_text()
    assert Version(version("kaggle")) >= Version("2.2")


def test_every_call_matches_the_client_and_errors_are_raised(real, tmp_path):
    from kagglesdk.datasets.types.dataset_api_service import ApiCreateDatasetResponse
    from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelSessionStatusResponse, ApiSaveKernelResponse

    ok_dataset, bad_dataset = ApiCreateDatasetResponse(), ApiCreateDatasetResponse()
    bad_dataset.error = "The requested slug is already in use"
    saved, refused = ApiSaveKernelResponse(), ApiSaveKernelResponse()
    saved.url = "https://www.kaggle.com/code/tester/x"
    refused.invalid_dataset_sources = ["tester/missing"]
    state = ApiGetKernelSessionStatusResponse()
    state.failure_message = ""
    api, client = boundary(real, get_config_value="tester", dataset_create_new=ok_dataset,
                           dataset_create_version=bad_dataset, kernels_push=saved, kernels_status=state,
                           kernels_output=(["a/b.json"], ""), kernels_logs="log text",
                           dataset_status=json.dumps({"status": "ready", "current_version_number": 3}))
    assert api.username() == "tester"
    assert api.dataset_status("tester/vadbench-code") == ("ready", 3)
    api.create_dataset(tmp_path)
    with pytest.raises(KaggleApiError, match="already in use"):
        api.version_dataset(tmp_path, "notes")
    assert api.push_kernel(tmp_path, "NvidiaTeslaT4", 43200) == "https://www.kaggle.com/code/tester/x"
    assert api.kernel_status("tester/x") == ("queued", "")
    assert api.download_output("tester/x", tmp_path) == [Path("a/b.json")]
    assert api.kernel_logs("tester/x") == "log text"
    client.answers["kernels_push"] = refused
    with pytest.raises(KaggleApiError, match=r"invalid dataset sources: \['tester/missing'\]"):
        api.push_kernel(tmp_path, "NvidiaTeslaT4", 43200)
    client.answers["dataset_status"] = RuntimeError("404 Client Error: Not Found")
    assert api.dataset_status("tester/vadbench-code") == ("missing", None)
    client.answers["dataset_status"] = RuntimeError("500 Server Error")
    with pytest.raises(KaggleApiError, match="500 Server Error"):
        api.dataset_status("tester/vadbench-code")
    assert {c[0] for c in client.calls} == {"get_config_value", "dataset_status", "dataset_create_new",
                                            "dataset_create_version", "kernels_push", "kernels_status",
                                            "kernels_output", "kernels_logs"}


def test_a_call_the_client_does_not_take_fails_here(real):
    api, client = boundary(real, kernels_push=None)
    with pytest.raises(TypeError):
        client.kernels_push("folder", accelerator="NvidiaTeslaT4")  # the client's parameter is `acc`
