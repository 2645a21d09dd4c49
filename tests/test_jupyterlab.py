"""As a user meets the notebooks: `make lab` as root, and Run All in a real JupyterLab in headless Chromium,
with each notebook's kernel started by JupyterLab in notebooks/."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from jupyterlab import Page, free_port, notebook_state, start_chromium, start_lab, stop, wait_http
from notebook_project import ROOT, RUN, copy_project
from vadbench import config, paths, records
from vadbench.report.export import find_chromium

ARTIFACTS = ROOT / "outputs" / "test-artifacts"  # screenshots kept for a person to look at


def test_make_lab_starts_as_root_and_prints_the_url(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    log = tmp_path / "lab.log"
    lab = subprocess.Popen(["make", "-s", "-o", ".venv/.installed", "lab", f"LAB_PORT={port}"], cwd=ROOT, env=env,
                           stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, url = time.monotonic() + 90, None
        while url is None and time.monotonic() < deadline and lab.poll() is None:
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab/tree/notebooks\?token=\w+", log.read_text())
            url = found.group(0) if found else time.sleep(0.5)
        assert url is not None, log.read_text()[-3000:]
        assert os.geteuid() != 0 or "Running as root is not recommended" not in log.read_text()
        token = url.rsplit("token=", 1)[1]
        status = json.loads(wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", 60))
        assert "started" in status  # the printed token is the server's
        assert b"JupyterLab" in wait_http(url, 30)  # the printed URL opens JupyterLab
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/notebooks?token={token}") as response:
            names = {item["name"] for item in json.loads(response.read())["content"]}
        assert {"train_evaluate.ipynb", "summary.ipynb"} <= names  # it serves the project's notebooks
    finally:
        os.killpg(lab.pid, 15)
        lab.wait(timeout=30)


def run_all(page: Page, base: str, notebook: str, timeout_s: float) -> dict:
    """Open a notebook in JupyterLab, wait for its kernel, Run All (the command of JupyterLab's Run menu), wait."""
    path = f"notebooks/{notebook}"
    page.call("Page.navigate", url=f"{base}/lab/tree/{path}")
    state = json.loads(page.wait_for(f"(() => {{ const s = {notebook_state(path)}; return s && JSON.parse(s).kernel "
                                     "=== 'idle' ? s : null; })()", 120, f"{notebook} open with an idle kernel"))
    page.eval(f"window.jupyterapp.shell.activateById('{state['id']}')")
    assert page.eval("window.jupyterapp.commands.isEnabled('notebook:run-all-cells')"), "Run All is not enabled"
    page.eval("window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => true)")
    done = f"(() => {{ const s = JSON.parse({notebook_state(path)}); return s.kernel === 'idle' && " \
           "(s.errors.length > 0 || s.counts.every(c => c !== null)) ? JSON.stringify(s) : null; })()"
    return json.loads(page.wait_for(done, timeout_s, f"Run All of {notebook}"))


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None and not os.environ.get("CI"), reason="Chromium not installed (make report-deps)")
def test_run_all_in_jupyterlab_renders_table_and_figure(tmp_path):
    project = copy_project(tmp_path / "proj")
    env = {k: v for k, v in os.environ.items() if k not in (paths.ROOT_ENV, "TQDM_DISABLE", "VADBENCH_PROGRESS")}
    lab_port, debug_port, token = free_port(), free_port(), "vadbench-test"
    lab = start_lab(project, token, lab_port, tmp_path, env)
    chromium = start_chromium(debug_port, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{lab_port}/api/status?token={token}", 90)
        page = Page(debug_port)
        base = f"http://127.0.0.1:{lab_port}"
        page.call("Page.navigate", url=f"{base}/lab?token={token}")  # log in once; the cookie does the rest
        page.wait_for("!!window.jupyterapp", 120, "JupyterLab loaded")

        state = run_all(page, base, "train_evaluate.ipynb", 600)
        shot = page.screenshot(ARTIFACTS / "jupyterlab-train_evaluate.png", ".jp-OutputArea-output img")
        assert state["errors"] == [], state
        assert state["tables"] >= 1 and state["images"] >= 1, state  # the summary table and the anomaly maps
        run = config.find_run(config.load_experiment(project / "params/experiments/demo.yaml"), *RUN.values())
        record = records.read_record(records.run_dir(project / "outputs/runs", "demo", *RUN.values()))
        assert (record["status"], record["config_hash"]) == ("ok", run.config_hash)
        assert record["environment"]["project_root"] == str(project.resolve())

        state = run_all(page, base, "summary.ipynb", 600)
        page.screenshot(ARTIFACTS / "jupyterlab-summary.png", ".jp-OutputArea-output table")
        assert state["errors"] == [] and state["tables"] >= 3 and state["images"] >= 1, state
        assert (project / "outputs/report/tables/comparison.csv").is_file()
        assert shot.stat().st_size > 20_000  # a real page, not a blank one
        page.close()
    finally:
        stop(chromium)
        stop(lab)
        print(Path(tmp_path / "jupyterlab.log").read_text()[-3000:])
