"""A Kaggle stand-in for tests, and the real, unpatched kaggle client pointed at it.

The stand-in runs in the test's process on a free port; the client runs in its own processes (the `kaggle` command,
or Python code with an authenticated KaggleApi), with a temporary HOME, KAGGLE_CONFIG_DIR and TMPDIR (the client
keeps upload state there) and a dummy API key, so nothing of a real account is read or touched. The client reads
KAGGLE_API_ENVIRONMENT when it is imported, which is one more reason it runs in fresh processes here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadbench.launch.kaggle.standin.wire import Standin, client_env

KAGGLE = str(Path(sys.executable).parent / "kaggle")
API_PRELUDE = """
import json, sys
from kaggle.api.kaggle_api_extended import KaggleApi
api = KaggleApi()
api.authenticate()
out = {}
"""


@dataclass
class Client:
    """The kaggle client as a user on this account runs it."""

    env: dict[str, str]
    cwd: Path

    def cli(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
        """`kaggle ARGS` (its exit status and output; no check)."""
        env = {**self.env, **({"KAGGLE_USERNAME": user} if user else {})}
        return subprocess.run([KAGGLE, *args], env=env, cwd=self.cwd, capture_output=True, text=True, timeout=300)

    def vadbench(self, *args: str, user: str | None = None, timeout_s: float = 600) -> subprocess.CompletedProcess:
        """`vadbench ARGS` in this client's environment (its exit status and output; no check)."""
        env = {**self.env, **({"KAGGLE_USERNAME": user} if user else {})}
        return subprocess.run([sys.executable, "-m", "vadbench.cli", *args], env=env, cwd=self.cwd, capture_output=True,
                              text=True, timeout=timeout_s)

    def start_vadbench(self, output: Path, *args: str) -> subprocess.Popen:
        """`vadbench ARGS` started in this client's environment, its stdout into `output`.out, stderr into .err."""
        with output.with_suffix(".out").open("w") as out, output.with_suffix(".err").open("w") as err:
            return subprocess.Popen([sys.executable, "-m", "vadbench.cli", *args], env=self.env, cwd=self.cwd,
                                    stdout=out, stderr=err, text=True)

    def api(self, code: str, user: str | None = None) -> dict[str, Any]:
        """Run `code` with `api` (an authenticated KaggleApi); what it puts into `out` comes back (as JSON)."""
        env = {**self.env, **({"KAGGLE_USERNAME": user} if user else {})}
        done = subprocess.run([sys.executable, "-c", API_PRELUDE + code + "\nprint(json.dumps(out, default=str))"],
                              env=env, cwd=self.cwd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


def client_environment(port: int, home: Path, user: str = "tester") -> dict[str, str]:
    """This process's environment without Kaggle credentials or proxies, pointed at a stand-in on `port`."""
    for sub in ("home", "tmp"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_") and not k.lower().endswith("_proxy")}
    env.update(client_env(port))
    env.update(HOME=str(home / "home"), KAGGLE_CONFIG_DIR=str(home / "home" / ".kaggle"), TMPDIR=str(home / "tmp"),
               KAGGLE_USERNAME=user, KAGGLE_KEY="dummy-standin-key")
    return env


@contextmanager
def standin(tmp_path: Path, **kwargs: Any) -> Iterator[tuple[Standin, Client]]:
    """A stand-in on a free port (its events in tmp_path/events.jsonl) and a client for user `tester`."""
    kwargs = {"processing_s": 0.4, "queue_s": 0.5, "log_path": tmp_path / "events.jsonl", **kwargs}
    service = Standin(tmp_path / "standin", port=0, **kwargs).start()
    try:
        yield service, Client(client_environment(service.port, tmp_path / "client"), tmp_path)
    finally:
        service.stop()


def events(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]


def most_at_once(log: list[dict[str, Any]]) -> int:
    """The most GPU sessions the service held at once by its log: each from its push to its end."""
    held: set[tuple[str, int]] = set()
    most = 0
    for event in log:
        key = (event.get("kernel", ""), event.get("version", 0))
        if event["event"] == "pushed" and event["gpu"] and event["run"]:
            held.add(key)
        elif event["event"] == "finished":
            held.discard(key)
        most = max(most, len(held))
    return most


def wait_for(check: Callable[[], Any], timeout_s: float = 120.0, every_s: float = 0.2) -> Any:
    """Poll until check() is truthy; its value."""
    ends = time.monotonic() + timeout_s
    while time.monotonic() < ends:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s")


def kernel_folder(folder: Path, ref: str, code: str, *, notebook: bool = False, gpu: bool = False,
                  sources: tuple[str, ...] = (), title: str | None = None, **meta: Any) -> Path:
    """A kernel folder `kaggle kernels push -p` takes: the code (a script, or one notebook cell) and its metadata."""
    import nbformat

    folder.mkdir(parents=True, exist_ok=True)
    slug = ref.split("/")[1]
    if notebook:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nbformat.write(nb, folder / f"{slug}.ipynb")
    else:
        (folder / f"{slug}.py").write_text(code)
    metadata = {"id": ref, "title": title or slug, "code_file": f"{slug}.{'ipynb' if notebook else 'py'}",
                "language": "python", "kernel_type": "notebook" if notebook else "script", "is_private": True,
                "enable_gpu": gpu, "enable_internet": False, "dataset_sources": list(sources), **meta}
    (folder / "kernel-metadata.json").write_text(json.dumps(metadata))
    return folder


def dataset_folder(folder: Path, ref: str, title: str, licence: str = "CC0-1.0") -> Path:
    """A folder with dataset-metadata.json, for `kaggle datasets create -p`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset-metadata.json").write_text(json.dumps({"id": ref, "title": title,
                                                              "licenses": [{"name": licence}]}))
    return folder
