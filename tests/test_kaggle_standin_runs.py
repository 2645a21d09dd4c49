"""Kernels pushed to the Kaggle stand-in with the real kaggle client run in the /kaggle replica: inputs read-only in
both mount layouts, /kaggle/working as the output the client downloads page by page, and a real shard notebook end
to end (uploaded code dataset, replica data, a GPU shard on this machine's CPU, its record pulled home)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

import replicas
from kaggle_standin import Client, client_environment, dataset_folder, events, kernel_folder, standin, wait_for
from vadbench import records
from vadbench.config import expand_runs, load_experiment
from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle import push, rehearse
from vadbench.launch.kaggle.kernel.layout import find_input
from vadbench.launch.kaggle.spec import load_kaggle_spec

ROOT = Path(__file__).resolve().parents[1]
REPLICA = pytest.mark.skipif(not rehearse.can_namespace(), reason="the replica's mounts need root and unshare")
WRITES_45 = """
import json, os, pathlib
base = pathlib.Path('/kaggle/input')
seen = sorted(str(p.relative_to(base)) for p in base.rglob('*.txt'))
try:
    (base / 'given-data' / 'new.txt').write_text('x')
    writable = True
except OSError:
    writable = False
for i in range(45):
    pathlib.Path(f'runs/r{i:02d}').mkdir(parents=True, exist_ok=True)
    pathlib.Path(f'runs/r{i:02d}/record.json').write_text(str(i))
pathlib.Path('seen.json').write_text(json.dumps({'seen': seen, 'writable': writable, 'cwd': os.getcwd()}))
"""


@REPLICA
def test_a_pushed_notebook_runs_in_the_replica_and_its_outputs_come_in_pages(tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    (given / "a.txt").write_text("a")
    kaggle_existed = Path("/kaggle").exists()
    with standin(tmp_path, datasets={"other/given-data": given}) as (service, client):
        made = dataset_folder(tmp_path / "made", "tester/made-data", "Made through the API")
        (made / "sub").mkdir()
        (made / "sub" / "b.txt").write_text("b")
        assert client.cli("datasets", "create", "-p", str(made), "--dir-mode", "zip").returncode == 0
        wait_for(lambda: client.cli("datasets", "status", "tester/made-data").stdout.strip() == "ready")
        folder = kernel_folder(tmp_path / "k", "tester/writes-many-files", WRITES_45, notebook=True, gpu=True,
                               sources=("other/given-data", "tester/made-data/1"), machine_shape="NvidiaTeslaT4")
        assert "successfully pushed" in client.cli("kernels", "push", "-p", str(folder)).stdout
        status = wait_for(lambda: (s := client.cli("kernels", "status", "tester/writes-many-files").stdout)
                          and ("COMPLETE" in s or "ERROR" in s) and s)
        assert "COMPLETE" in status, client.cli("kernels", "logs", "tester/writes-many-files").stdout[-3000:]
        pages = client.api(
            "token, sizes = '', []\n"
            "while True:\n"
            "    files, token = api.kernels_output('tester/writes-many-files', 'paged', page_token=token,"
            " page_size=100)\n"
            "    sizes.append(len([f for f in files if not f.endswith('.log')]))\n"
            "    if not token:\n        break\n"
            "out['sizes'] = sizes")
        assert pages["sizes"] == [20, 20, 6]  # 46 files, at most 20 a page whatever the client asks for
        downloaded = client.cli("kernels", "output", "tester/writes-many-files", "-p", str(tmp_path / "out"))
        assert downloaded.returncode == 0
        files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
        assert len(files) == 47 and "writes-many-files.log" in files and "runs/r44/record.json" in files
    seen = json.loads((tmp_path / "out" / "seen.json").read_text())
    assert seen == {"cwd": "/kaggle/working", "writable": False, "seen": [
        "datasets/other/given-data/a.txt", "datasets/tester/made-data/sub/b.txt", "given-data/a.txt",
        "made-data/sub/b.txt"]}
    assert Path("/kaggle").exists() == kaggle_existed
    finished = next(e for e in events(tmp_path) if e["event"] == "finished")
    assert (finished["status"], finished["outputs"], finished["gpu"]) == ("complete", 46, True)


@REPLICA
def test_kaggle_dir_is_never_removed_under_a_running_replica(tmp_path):
    """Another process removing an empty /kaggle would unmount a running replica's /kaggle (its inputs and
    /kaggle/working vanish mid-run); while one runs, /kaggle holds its marker, so that removal fails, and its mount
    is seen, so no replica's cleanup removes /kaggle under it."""
    existed = Path("/kaggle").exists()
    started = tmp_path / "started"
    working = tmp_path / "working"
    working.mkdir()
    wait = f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(3)"
    runner = threading.Thread(target=rehearse.execute_in_replica, args=(tmp_path / "x", tmp_path / "y", [], working,
                                                                         tmp_path, True, [sys.executable, "-c", wait]))
    runner.start()
    wait_for(started.exists, 60)
    with pytest.raises(OSError):
        os.rmdir("/kaggle")  # what a cleanup elsewhere would do
    assert any(p.name.startswith(".replica-") for p in Path("/kaggle").iterdir())
    assert rehearse._mounted_elsewhere()  # and a cleanup sees its mount (a replica of older code holds no marker)
    runner.join(60)
    assert Path("/kaggle").exists() == existed


def test_find_input_finds_either_layout_and_never_another_owners(tmp_path):
    (tmp_path / "datasets" / "alice" / "mvtec-ad").mkdir(parents=True)
    (tmp_path / "datasets" / "bob" / "shared-name").mkdir(parents=True)
    (tmp_path / "datasets" / "carol" / "shared-name").mkdir(parents=True)
    (tmp_path / "old-layout").mkdir()
    assert find_input("alice/mvtec-ad", tmp_path) == tmp_path / "datasets/alice/mvtec-ad"
    assert find_input("carol/shared-name", tmp_path) == tmp_path / "datasets/carol/shared-name"
    assert find_input("dave/old-layout", tmp_path) == tmp_path / "old-layout"
    (tmp_path / "mvtec-ad").mkdir()
    assert find_input("alice/mvtec-ad", tmp_path) == tmp_path / "datasets/alice/mvtec-ad"  # the owner's own first
    with pytest.raises(KaggleSetupError, match="'erin/shared-name' is not attached"):
        find_input("erin/shared-name", tmp_path)


def test_a_resumed_upload_completes_as_the_client_resumes_it(tmp_path):
    with standin(tmp_path) as (service, client):
        done = client.api(
            "import os, requests\n"
            "from kagglesdk.blobs.types.blob_api_service import ApiBlobType, ApiStartBlobUploadRequest\n"
            "data = os.urandom(1000)\nopen('blob.bin', 'wb').write(data)\n"
            "req = ApiStartBlobUploadRequest()\n"
            "req.type, req.name, req.content_length = ApiBlobType.DATASET, 'blob.bin', 1000\n"
            "with api.build_kaggle_client() as k:\n    started = k.blobs.blob_api_client.start_blob_upload(req)\n"
            "part = requests.put(started.create_url, data=data[:400], headers={'Content-Range': 'bytes 0-399/1000'})\n"
            "state = api._resume_upload('blob.bin', started.create_url, 1000, True)\n"
            "out['part'], out['resume_at'] = part.status_code, state.start_at\n"
            "out['complete'] = api.upload_complete('blob.bin', started.create_url, True, resume=True)\n"
            "out['token'] = started.token")
        assert (done["part"], done["resume_at"], done["complete"]) == (308, 400, 1)  # 1: COMPLETE
        assert service.blobs.take(done["token"]).path.read_bytes() == (tmp_path / "blob.bin").read_bytes()


def test_the_standin_command_serves_until_stopped(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    bad = subprocess.run([sys.executable, "-m", "vadbench.cli", "kaggle", "standin", "--dataset", "tester/x"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and "--dataset takes OWNER/SLUG=DIR" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "vadbench.cli", "kaggle", "standin", "--port", "0", "--state",
                             str(tmp_path / "state"), "--log", str(tmp_path / "events.jsonl"), "--dataset",
                             f"tester/given-data={data}"], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        port = int(lines[0].split("port ")[1].split(";")[0])
        assert lines[1:] == ["export KAGGLE_API_ENVIRONMENT=LOCALHOST\n", f"export http_proxy=http://127.0.0.1:{port}\n",
                             f"export HTTP_PROXY=http://127.0.0.1:{port}\n"]
        client = Client(client_environment(port, tmp_path / "client"), tmp_path)
        assert wait_for(lambda: client.cli("datasets", "status", "tester/given-data").stdout.strip(), 60) == "ready"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert [e["event"] for e in events(tmp_path)] == ["dataset_given", "serving", "stopped"]


@pytest.mark.slow
@REPLICA
def test_a_shard_pushed_with_the_real_client_runs_and_its_record_comes_home(tmp_path, monkeypatch):
    """The study's DRÆM x WFDD shard at the smoke budget: code dataset uploaded with `kaggle datasets create`, data
    given to the stand-in, the kernel pushed as a GPU kernel with `kaggle kernels push` (it runs on this machine's
    CPU), outputs fetched with `kaggle kernels output`: the record has the config hash of the same run at home."""
    shutil.copytree(ROOT / "params", tmp_path / "params")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VADBENCH_WFDD_ROOT", raising=False)
    replicas.build_wfdd(Path("datasets/wfdd"))
    replicas.build_folder(Path("datasets/dtd/images"), categories=("banded",), n_good=6, n_defect=0, masks=False)
    mounts = {"datasets/wfdd": "tester/wfdd-data", "datasets/dtd": "tester/dtd-textures"}
    Path("kaggle.yaml").write_text(yaml.safe_dump({"owner": "tester", "mounts": mounts}))
    smoke = rehearse.smoke_params("params/experiments/study_baseline.yaml", tmp_path / "smoke")
    study = yaml.safe_load(smoke.read_text())  # the DRÆM x WFDD shard alone: no other shard's data needed
    study["datasets"] = [d for d in study["datasets"] if d["name"] == "wfdd"]
    study["models"] = [m for m in study["models"] if m["name"] == "draem"]
    smoke.write_text(yaml.safe_dump(study, sort_keys=False))
    shards = push.write_shards(smoke, Path("outputs/kaggle"), load_kaggle_spec("kaggle.yaml"), ["model", "dataset"],
                               "tester")
    shard = next(s for s in shards if s.slug.startswith("vadbench-study-baseline-draem-wfdd"))
    with standin(tmp_path, datasets={v: Path(k) for k, v in mounts.items()}) as (service, client):
        created = client.cli("datasets", "create", "-p", "outputs/kaggle/code")
        assert "being created" in created.stdout, created.stdout + created.stderr
        wait_for(lambda: client.cli("datasets", "status", "tester/vadbench-code").stdout.strip() == "ready")
        meta_path = Path(shard.folder) / "kernel-metadata.json"
        meta = json.loads(meta_path.read_text())
        meta["dataset_sources"][0] = "tester/vadbench-code/1"  # pinned to the version made, as push pins it
        meta_path.write_text(json.dumps(meta))
        pushed = client.cli("kernels", "push", "-p", shard.folder, "--accelerator", "NvidiaTeslaT4", "-t", "43200")
        assert "successfully pushed" in pushed.stdout and "not valid" not in pushed.stdout, pushed.stdout
        status = wait_for(lambda: (s := client.cli("kernels", "status", shard.kernel_id).stdout) and
                          ("COMPLETE" in s or "ERROR" in s) and s, timeout_s=900, every_s=5)
        assert "COMPLETE" in status, client.cli("kernels", "logs", shard.kernel_id).stdout[-4000:]
        assert client.cli("kernels", "output", shard.kernel_id, "-p", "downloads").returncode == 0
        pulled = client.api(f"out['text'] = api.build_kaggle_client().kernels.kernels_api_client.get_kernel("
                            "__import__('kagglesdk.kernels.types.kernels_api_service', fromlist=['x'])"
                            f".ApiGetKernelRequest.from_dict({{'userName': 'tester', 'kernelSlug': {shard.slug!r}}}))"
                            ".blob.source")
    assert 'require_gpu = True' in pulled["text"]  # the service kept the notebook as pushed
    status_file = json.loads((tmp_path / "downloads" / records.SHARD_STATUS_FILE).read_text())
    assert len(status_file["finished"]) == 1 and not status_file["failed"] and not status_file["deferred"]
    run = next(r for r in expand_runs(load_experiment(smoke)) if r.model.name == "draem" and r.dataset.name == "wfdd")
    record = records.read_record(records.run_dir(tmp_path / "downloads/runs", run.experiment, "draem", "wfdd",
                                                 run.category, run.seed))
    assert (record["status"], record["config_hash"]) == ("ok", run.config_hash)
    log = json.loads((tmp_path / "downloads" / f"{shard.slug}.log").read_text())
    assert any("gpu" in e["data"] and "none" in e["data"] for e in log)  # it ran on this machine's CPU
