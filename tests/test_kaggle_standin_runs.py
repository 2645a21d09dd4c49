"""Kernels pushed to the Kaggle stand-in with the real kaggle client run in the /kaggle replica: inputs read-only in
both mount layouts, /kaggle/working as the output the client downloads page by page. Real shard notebooks pushed by
`vadbench kaggle drive` run there end to end in tests/test_kaggle_loop.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kaggle_standin import Client, client_environment, dataset_folder, events, kernel_folder, standin, wait_for
from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle import rehearse
from vadbench.launch.kaggle.kernel.layout import find_input

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
