"""Where the project is: its root (which relative paths in params and notebooks are relative to), its
notebooks folder, and which commit its code is.

The root is $VADBENCH_ROOT, else the nearest folder at or above the working folder whose pyproject.toml
names the vadbench project. A notebook kernel starts in the notebook's own folder (JupyterLab does that),
so notebooks call `use_project_root()` first; `vadbench run` passes its own working folder to its kernels.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path

from vadbench.errors import ProjectRootError

log = logging.getLogger(__name__)

ROOT_ENV = "VADBENCH_ROOT"
PROJECT_NAME = "vadbench"

#: The source checkout this package was installed from (src/vadbench/../..); a wheel install has no such root.
SOURCE_ROOT = Path(__file__).resolve().parents[2]


CACHE_ENV = "VADBENCH_CACHE"  # caches' base folder; VADBENCH_CACHE_DIR is read as an older name of it


def cache_dir() -> Path:
    """The caches' base folder: $VADBENCH_CACHE (or $VADBENCH_CACHE_DIR), else outputs/cache (relative to the root)."""
    return Path(os.environ.get(CACHE_ENV) or os.environ.get("VADBENCH_CACHE_DIR") or "outputs/cache")


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


def is_project_root(folder: Path) -> bool:
    """True when folder holds a pyproject.toml whose project is vadbench."""
    try:
        data = tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return False
    return data.get("project", {}).get("name") == PROJECT_NAME


def find_project_root(start: Path | str | None = None) -> Path:
    """$VADBENCH_ROOT, else the nearest vadbench project folder at or above start (default: the working folder)."""
    env = os.environ.get(ROOT_ENV)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise ProjectRootError(f"${ROOT_ENV}={env} is not a folder: set it to the vadbench project folder "
                                   "(the one holding params/ and notebooks/)")
        return root.resolve()
    start = Path(start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if is_project_root(folder):
            return folder
    raise ProjectRootError(f"no vadbench project at {start} or above it (a folder whose pyproject.toml names "
                           f"{PROJECT_NAME}): start Jupyter or vadbench inside the project, or set "
                           f"{ROOT_ENV}=/path/to/the/project")


def use_project_root(start: Path | str | None = None) -> Path:
    """Find the project root and make it the working folder, so relative paths in params resolve against it."""
    root = find_project_root(start)
    if Path.cwd().resolve() != root:
        log.info("project root %s (relative paths resolve here)", root)
        os.chdir(root)
    return root


@contextlib.contextmanager
def environ(extra: dict[str, str]) -> Iterator[None]:
    """os.environ with `extra` set (a papermill kernel started inside inherits it), restored afterwards."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def kernel_environ(extra: dict[str, str] | None = None) -> contextlib.AbstractContextManager[None]:
    """The environment of a kernel this process starts: the project root is our working folder."""
    return environ({ROOT_ENV: str(Path.cwd().resolve()), **(extra or {})})
