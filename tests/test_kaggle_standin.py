"""The Kaggle stand-in through the real, unpatched kaggle client: how the client reaches it, the service's answers
to unknown names, datasets and their processing, the account's GPU limits, and what the wire refuses.

Kernels here are Python scripts (no papermill start-up); tests/test_kaggle_standin_runs.py runs notebooks.
"""
from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path

import requests

from kaggle_standin import dataset_folder, events, kernel_folder, standin, wait_for

STATUS = "out['status'] = api.kernels_status({ref!r}).status.name"


def test_the_client_reaches_the_standin_by_its_own_switches(tmp_path):
    """kagglesdk alone with KAGGLE_API_ENVIRONMENT=TEST calls localhost:7777; the kaggle client ignores TEST and
    would call api.kaggle.com (refused here, at the proxy); with LOCALHOST and http_proxy it reaches any port."""
    with standin(tmp_path) as (service, client):
        found = client.api("from kagglesdk.kaggle_env import get_endpoint, KaggleEnv\n"
                           "out['test'] = get_endpoint(KaggleEnv.TEST)\n"
                           "out['client'] = api.build_kaggle_client().http_client()._endpoint")
        assert found == {"test": "http://localhost:7777", "client": "http://localhost"}
        client.env["KAGGLE_API_ENVIRONMENT"] = "TEST"
        wrong = client.cli("kernels", "status", "tester/some-kernel")
        assert wrong.returncode == 1 and "api.kaggle.com" in wrong.stderr and "403" in wrong.stderr
        client.env["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"
        reached = client.cli("kernels", "status", "tester/some-kernel")
        assert "Permission 'kernels.get' was denied" in reached.stdout + reached.stderr
        config = Path(client.env.pop("KAGGLE_CONFIG_DIR"))  # the key from kaggle.json instead of the environment
        del client.env["KAGGLE_USERNAME"], client.env["KAGGLE_KEY"]
        client.env["KAGGLE_CONFIG_DIR"] = str(config)
        config.mkdir(parents=True, exist_ok=True)
        (config / "kaggle.json").write_text(json.dumps({"username": "from-file", "key": "k"}))
        (config / "kaggle.json").chmod(0o600)
        assert client.api("out['user'] = api.get_config_value('username')") == {"user": "from-file"}
        folder = kernel_folder(tmp_path / "k", "from-file/file-kernel", "print(1)")
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(folder)).stdout  # owner = the key's
    assert [e["event"] for e in events(tmp_path)][:2] == ["serving", "pushed"]


def test_unknown_and_private_names_are_403(tmp_path):
    with standin(tmp_path) as (service, client):
        dataset = dataset_folder(tmp_path / "data", "tester/private-data", "Private data")
        (dataset / "a.txt").write_text("a")
        assert client.cli("datasets", "create", "-p", str(dataset)).returncode == 0
        wait_for(lambda: client.cli("datasets", "status", "tester/private-data").stdout.strip() == "ready")
        folder = kernel_folder(tmp_path / "k", "tester/private-kernel", "print(1)")
        assert client.cli("kernels", "push", "-p", str(folder)).returncode == 0
        codes = client.api(
            "from requests.exceptions import HTTPError\n"
            "try:\n    api.dataset_status('tester/never-uploaded')\n"
            "except HTTPError as exc:\n    out['dataset'] = [exc.response.status_code, str(exc)]\n"
            "try:\n    api.kernels_status('tester/never-pushed')\n"
            "except ValueError as exc:  # the client turns only 401 and 403 into this\n    out['kernel'] = str(exc)\n")
        assert codes["dataset"] == [403, "Permission 'datasets.get' was denied"]
        assert codes["kernel"].startswith("Cannot access kernel 'tester/never-pushed' (Permission 'kernels.get' was "
                                          "denied). The most likely cause is a wrong kernel slug.")
        for args in (("kernels", "status", "tester/private-kernel"), ("datasets", "status", "tester/private-data"),
                     ("kernels", "output", "tester/private-kernel", "-p", str(tmp_path / "o"))):
            other = client.cli(*args, user="someone-else")  # another account: as if it did not exist
            assert other.returncode == 1 and "was denied" in other.stdout + other.stderr, args
        mine = client.cli("kernels", "status", "tester/never-pushed")
        assert "Cannot access kernel 'tester/never-pushed' (Permission 'kernels.get' was denied)" in mine.stderr


def test_dataset_processing_versions_and_refusals(tmp_path):
    with standin(tmp_path, processing_s=2.0) as (service, client):
        folder = dataset_folder(tmp_path / "mvtec", "tester/mvtec-replica", "MVTec replica")
        (folder / "bottle" / "train" / "good").mkdir(parents=True)
        (folder / "bottle" / "train" / "good" / "000.png").write_bytes(b"png")
        (folder / "readme.txt").write_text("hello")
        skipped = client.cli("datasets", "create", "-p", str(folder), "--dir-mode", "skip")
        assert "Skipping folder: bottle" in skipped.stdout
        assert "Dataset creation error" not in skipped.stdout  # readme.txt alone is a dataset
        only_folders = dataset_folder(tmp_path / "only", "tester/only-folders", "Only folders")
        (only_folders / "sub").mkdir()
        (only_folders / "sub" / "x.txt").write_text("x")
        empty = client.cli("datasets", "create", "-p", str(only_folders))
        assert "Dataset creation error: Please specify at least one file." in empty.stdout
        created = client.api(f"api.dataset_create_new({str(tmp_path / 'only')!r}, quiet=True, dir_mode='zip')\n"
                             "out['first'] = api.dataset_status('tester/only-folders')")
        assert created["first"] in ("blobs_received", "blobs_decompressed")  # processing, not yet ready
        wait_for(lambda: client.cli("datasets", "status", "tester/only-folders").stdout.strip() == "ready")
        files = client.cli("datasets", "files", "tester/only-folders").stdout
        assert "sub/x.txt" in files  # the zipped folder comes back as a folder
        again = client.cli("datasets", "create", "-p", str(only_folders))
        assert 'The requested slug "only-folders" is already in use' in again.stdout
        (only_folders / "broken.zip").write_bytes(b"this is not a zip archive")
        versioned = client.cli("datasets", "version", "-p", str(only_folders), "-m", "a bad upload")
        assert "Dataset version is being created" in versioned.stdout
        def state() -> dict:
            return json.loads(client.cli("datasets", "status", "tester/only-folders", "--format", "json").stdout)

        failed = wait_for(lambda: (now := state())["status"] == "failed" and now)
        assert failed == {"status": "failed", "current_version_number": 1}  # the ready version stays current
        other = client.cli("datasets", "version", "-p", str(only_folders), "-m", "x", user="someone-else")
        assert "Permission 'datasets.update' was denied" in other.stdout + other.stderr
        owner = client.cli("datasets", "create", "-p", str(dataset_folder(tmp_path / "x", "someone/x-data-set",
                                                                           "Not my data")))
        assert "Dataset creation error" in owner.stdout
    names = [(e["event"], e.get("dataset"), e.get("version")) for e in events(tmp_path)]
    assert ("dataset_failed", "tester/only-folders", 2) in names and ("dataset_ready", "tester/only-folders", 1) in names


def test_at_most_two_gpu_sessions_per_account_and_the_status_strings(tmp_path):
    """A third GPU push is refused with the service's message and nothing is saved; a CPU kernel is not counted;
    statuses move queued -> running -> complete or error."""
    with standin(tmp_path, queue_s=1.0) as (service, client):
        for name in ("gpu-one", "gpu-two", "gpu-three"):
            kernel_folder(tmp_path / name, f"tester/{name}", "import time\ntime.sleep(3)\nprint('done')", gpu=True)
        kernel_folder(tmp_path / "cpu-one", "tester/cpu-one", "raise SystemExit('broken on purpose')")
        pushed = client.api(
            "for name in ('gpu-one', 'gpu-two', 'gpu-three', 'cpu-one'):\n"
            "    r = api.kernels_push(name)\n"
            "    out[name] = [r.error, r.version_number]\n"
            "out['first'] = api.kernels_status('tester/gpu-one').status.name")
        assert pushed == {"gpu-one": ["", 1], "gpu-two": ["", 1], "cpu-one": ["", 1], "first": "QUEUED",
                          "gpu-three": ["Maximum batch GPU session count of 2 reached", 0]}  # kagglesdk reads unset as ""/0
        refused = client.cli("kernels", "push", "-p", str(tmp_path / "gpu-three"))
        assert "Kernel push error: Maximum batch GPU session count of 2 reached" in refused.stdout
        assert "was denied" in client.cli("kernels", "status", "tester/gpu-three").stderr  # nothing was saved
        wait_for(lambda: client.api(STATUS.format(ref="tester/gpu-one"))["status"] == "RUNNING")
        done = wait_for(lambda: (s := client.cli("kernels", "status", "tester/gpu-one").stdout) and "COMPLETE" in s
                        and s)
        assert done.strip() == 'tester/gpu-one has status "KernelWorkerStatus.COMPLETE"'
        broken = client.cli("kernels", "status", "tester/cpu-one")
        assert 'has status "KernelWorkerStatus.ERROR"' in broken.stdout and "broken on purpose" in broken.stdout
        wait_for(lambda: "COMPLETE" in client.cli("kernels", "status", "tester/gpu-two").stdout)
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(tmp_path / "gpu-three")).stdout
    log = events(tmp_path)
    assert max(e.get("gpu_sessions_running", 0) for e in log) == 2
    assert [e["kernel"] for e in log if e["event"] == "refused"] == ["tester/gpu-three"] * 2


def test_weekly_gpu_quota_is_counted_and_refuses_when_spent(tmp_path):
    with standin(tmp_path, quota_hours=1.0 / 3600) as (service, client):  # one GPU second a week
        folder = kernel_folder(tmp_path / "k", "tester/gpu-sleeper", "import time\ntime.sleep(1.5)", gpu=True)
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(folder)).stdout
        wait_for(lambda: "COMPLETE" in client.cli("kernels", "status", "tester/gpu-sleeper").stdout)
        quota = client.api("q = api.quota_view().gpu_quota\n"
                           "out['used'], out['total'] = q.time_used.total_seconds(), q.total_time_allowed.total_seconds()")
        assert 1.5 <= quota["used"] < 30 and quota["total"] == 1.0
        again = client.cli("kernels", "push", "-p", str(folder))
        assert "Kernel push error: You've exceeded the number of hours allowed to use GPU." in again.stdout
        cpu = kernel_folder(tmp_path / "c", "tester/cpu-kernel", "print(1)")
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(cpu)).stdout  # CPU is not counted
    wide = standin(tmp_path / "wide", quota_hours=30.0)
    with wide as (service, client):  # the service's 30 h reach the client whole (kagglesdk's serializer drops days)
        table = client.cli("quota").stdout
        assert "30.00h" in table and "GPU" in table


def test_a_kernel_with_an_unknown_source_is_saved_runs_and_errors(tmp_path):
    with standin(tmp_path) as (service, client):
        folder = kernel_folder(tmp_path / "k", "tester/reads-missing-data",
                               "print(open('/kaggle/input/not-uploaded/x.csv').read())",
                               sources=("tester/not-uploaded",), gpu=True)
        pushed = client.cli("kernels", "push", "-p", str(folder))
        assert "The following are not valid dataset sources and could not be added to the kernel: " \
               "['tester/not-uploaded']" in pushed.stdout and "Kernel version 1 successfully pushed" in pushed.stdout
        status = wait_for(lambda: "ERROR" in (s := client.cli("kernels", "status", "tester/reads-missing-data").stdout)
                          and s)
        assert "FileNotFoundError" in status and "/kaggle/input/not-uploaded/x.csv" in status
        log = json.loads(client.cli("kernels", "logs", "tester/reads-missing-data").stdout)
        assert any("Traceback" in entry["data"] for entry in log) and {e["stream_name"] for e in log} <= {"stdout",
                                                                                                           "stderr"}
    pushed_event = next(e for e in events(tmp_path) if e["event"] == "pushed")
    assert pushed_event["invalid_sources"] == ["tester/not-uploaded"] and pushed_event["sources"] == []


def test_the_title_makes_a_new_kernel_slug_and_shapes_are_checked(tmp_path):
    with standin(tmp_path) as (service, client):
        folder = kernel_folder(tmp_path / "k", "tester/my-kernel-id", "print(1)", title="Another Title Here")
        pushed = client.cli("kernels", "push", "-p", str(folder))
        assert "does not resolve to the specified id" in pushed.stdout  # the client only warns
        assert "/code/tester/another-title-here" in pushed.stdout  # the service names the kernel by its title
        assert "was denied" in client.cli("kernels", "status", "tester/my-kernel-id").stderr
        odd = kernel_folder(tmp_path / "m", "tester/odd-machine", "print(1)", machine_shape="NvidiaTeslaK80")
        assert "Kernel push error: Unknown machine shape 'NvidiaTeslaK80'" in client.cli(
            "kernels", "push", "-p", str(odd)).stdout
        retired = kernel_folder(tmp_path / "r", "tester/retired-machine", "print(1)", machine_shape="NvidiaTeslaP100")
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(retired)).stdout


def test_the_wire_refuses_what_the_service_would(tmp_path):
    with standin(tmp_path) as (service, client):
        base = f"http://127.0.0.1:{service.port}/api/v1/kernels.KernelsApiService"
        auth = {"Authorization": "Basic " + base64.b64encode(b"tester:key").decode()}
        body = {"userName": "tester", "kernelSlug": "some-kernel"}
        assert requests.post(f"{base}/GetKernelSessionStatus", json=body, timeout=10).status_code == 401
        odd = requests.post(f"{base}/GetKernelSessionStatus", json={**body, "kernelName": "x"}, headers=auth, timeout=10)
        assert odd.status_code == 400 and "kernelName" in odd.json()["message"]
        missing = requests.post(f"{base}/CreateKernelSession", json={}, headers=auth, timeout=10)
        assert missing.status_code == 501 and "not implemented by the vadbench Kaggle stand-in" in missing.text
        proxy = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        proxy.request("CONNECT", "api.kaggle.com:443")
        assert proxy.getresponse().status == 403
        elsewhere = requests.post("http://example.com/api/v1/x/y", json={}, timeout=10,
                                  proxies={"http": f"http://127.0.0.1:{service.port}"})
        assert elsewhere.status_code == 404
        files = requests.get(f"http://127.0.0.1:{service.port}/files/../../etc/passwd", timeout=10)
        assert files.status_code == 404


def test_a_running_kernels_log_can_be_followed(tmp_path):
    with standin(tmp_path) as (service, client):
        folder = kernel_folder(tmp_path / "k", "tester/talks-slowly",
                               "import time\nprint('first line')\ntime.sleep(2)\nprint('second line')")
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(folder)).stdout
        followed = client.cli("kernels", "logs", "-f", "tester/talks-slowly")  # returns when the session ends
        assert followed.returncode == 0 and followed.stdout.splitlines() == ["first line", "second line"]
        assert "COMPLETE" in client.cli("kernels", "status", "tester/talks-slowly").stdout
