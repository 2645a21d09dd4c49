"""Where the project's own files are (the checkout root, its notebooks folder) and which commit they are."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: The source checkout this package was installed from (src/vadbench/../..); a wheel install has no such root.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


def notebooks_dir() -> Path:
    """The notebooks folder: $VADBENCH_NOTEBOOKS, else the checkout's notebooks/, else ./notebooks."""
    env = os.environ.get("VADBENCH_NOTEBOOKS")
    if env:
        return Path(env)
    checkout = SOURCE_ROOT / "notebooks"
    return checkout if checkout.is_dir() else Path.cwd() / "notebooks"


def git_commit() -> str:
    """The project's commit (env VADBENCH_GIT_COMMIT wins, for copies without .git), or `unknown`."""
    if os.environ.get("VADBENCH_GIT_COMMIT"):
        return os.environ["VADBENCH_GIT_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
