"""Build a pure-Python wheel of this package from its source tree, without a build backend or network.

Used to ship the exact checked-out code to Kaggle (a private dataset holding the wheel). The wheel is
byte-for-byte reproducible: files in sorted order with a fixed timestamp. It carries the commit it was
built from as `vadbench/_build.py` (BUILD_COMMIT), which the Kaggle kernel checks after installing it.
"""
from __future__ import annotations

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path

from vadbench.paths import SOURCE_ROOT

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # src/vadbench
PROJECT_ROOT = SOURCE_ROOT
_STAMP = (2020, 1, 1, 0, 0, 0)


def _digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _metadata(project: dict) -> str:
    lines = ["Metadata-Version: 2.1", f"Name: {project['name']}", f"Version: {project['version']}",
             f"Summary: {project.get('description', '')}", f"Requires-Python: {project.get('requires-python', '')}"]
    lines += [f"Requires-Dist: {dep}" for dep in project.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def build_wheel(out_dir: Path | str, project_root: Path = PROJECT_ROOT, commit: str = "unknown") -> Path:
    """Write `<name>-<version>-py3-none-any.whl` (carrying `commit`) into out_dir and return its path."""
    project = tomllib.loads((project_root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    name, version = project["name"], project["version"]
    info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if "__pycache__" not in path.parts:
            files[f"{name}/{path.relative_to(PACKAGE_DIR).as_posix()}"] = path.read_bytes()
    files[f"{name}/_build.py"] = f'"""Written by the wheel build."""\nBUILD_COMMIT = {commit!r}\n'.encode()
    files = dict(sorted(files.items()))
    files[f"{info}/METADATA"] = _metadata(project).encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: vadbench.wheel\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    scripts = "".join(f"{k} = {v}\n" for k, v in project.get("scripts", {}).items())
    files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{scripts}".encode()
    record = "".join(f"{n},{_digest(d)},{len(d)}\n" for n, d in files.items()) + f"{info}/RECORD,,\n"
    files[f"{info}/RECORD"] = record.encode()
    out = Path(out_dir) / f"{name}-{version}-py3-none-any.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for n, d in files.items():
            entry = zipfile.ZipInfo(n, date_time=_STAMP)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, d)
    return out
