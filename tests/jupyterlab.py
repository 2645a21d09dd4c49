"""Drive a real JupyterLab in headless Chromium (test helpers): start both, talk to the page over the
Chrome DevTools protocol, run a notebook's cells through JupyterLab's own commands, take screenshots."""
from __future__ import annotations

import base64
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import websocket  # websocket-client, installed with jupyter

from vadbench.report.export import find_chromium

JUPYTER_LAB = Path(sys.executable).parent / "jupyter-lab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout_s: float) -> bytes:
    """The body of url once it answers 200; raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer in {timeout_s} s") from None
            time.sleep(0.5)


def start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A background process in its own group, output to log."""
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env or os.environ.copy(),
                            start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(process.pid, signal.SIGKILL)


def start_lab(root: Path, token: str, port: int, scratch: Path, env: dict) -> subprocess.Popen:
    command = [str(JUPYTER_LAB), "--no-browser", "--allow-root", f"--ServerApp.root_dir={root}",
               f"--IdentityProvider.token={token}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
               "--ServerApp.port_retries=0", "--LabApp.expose_app_in_browser=True",
               f"--LabApp.workspaces_dir={scratch / 'workspaces'}", f"--LabApp.user_settings_dir={scratch / 'settings'}"]
    return start(command, scratch / "jupyterlab.log", env)


def start_chromium(port: int, scratch: Path) -> subprocess.Popen:
    command = [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-dev-shm-usage", f"--remote-debugging-port={port}", f"--user-data-dir={scratch / 'chromium'}",
               "--window-size=1500,1100", "about:blank"]
    return start(command, scratch / "chromium.log")


class Page:
    """One Chromium tab over the DevTools protocol."""

    def __init__(self, debug_port: int) -> None:
        targets = json.loads(wait_http(f"http://127.0.0.1:{debug_port}/json", 30))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=60, suppress_origin=True)
        self.ids = itertools.count(1)
        self.call("Emulation.setFocusEmulationEnabled", enabled=True)  # a headless tab is never focused otherwise

    def call(self, method: str, **params) -> dict:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float, what: str):
        """The expression's value once truthy; TimeoutError naming `what` and the last value."""
        deadline, value = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            try:
                value = self.eval(expression)
            except RuntimeError as exc:
                value = str(exc)
            if value and not (isinstance(value, str) and value.startswith("page error")):
                return value
            time.sleep(1)
        raise TimeoutError(f"{what}: not seen in {timeout_s} s (last: {value!r})")

    def screenshot(self, path: Path, scroll_to: str = "") -> Path:
        """A PNG of the tab; scroll_to: a CSS selector whose last match is scrolled into view first."""
        if scroll_to:
            self.eval(f"(() => {{ const found = document.querySelectorAll({json.dumps(scroll_to)}); "
                      "if (found.length) found[found.length - 1].scrollIntoView({block: 'center'}); return true; })()")
            time.sleep(1)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.ws.close()


def notebook_state(path: str) -> str:
    """JavaScript giving, for the notebook at path in JupyterLab's main area (null until it is there): its kernel
    state, code cells' execution counts, error outputs, and what rendered (tables and images in output areas)."""
    return """(() => {
  const app = window.jupyterapp; if (!app) return null;
  const nb = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === 'PATH');
  if (!nb || !nb.sessionContext) return null;
  const kernel = nb.sessionContext.session && nb.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  const outputs = cells.flatMap(c => c.model.sharedModel.outputs || []);
  return JSON.stringify({
    id: nb.id, kernel: kernel ? kernel.status : 'none',
    counts: cells.map(c => c.model.sharedModel.execution_count),
    errors: outputs.filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
    tables: nb.node.querySelectorAll('.jp-OutputArea-output table').length,
    images: nb.node.querySelectorAll('.jp-OutputArea-output img').length,
  });
})()""".replace("PATH", path)
