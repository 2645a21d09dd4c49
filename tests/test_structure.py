"""The package's shape: stages import one way (no cycles), modules stay small, the report and records need no torch."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vadbench"
MAX_LINES = 400
#: Parts that must import without torch or anomalib: a report builds on a laptop that has neither.
TORCH_FREE = ("vadbench.config", "vadbench.strict", "vadbench.stats", "vadbench.records", "vadbench.errors", "vadbench.paths",
              "vadbench.report.tables", "vadbench.report.breakdowns", "vadbench.report.figures",
              "vadbench.report.references", "vadbench.report.export", "vadbench.report.build",
              "vadbench.report.markdown", "vadbench.launch.runner", "vadbench.launch.kaggle", "vadbench.data.registry")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every vadbench module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("vadbench")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vadbench"):
            for alias in node.names:  # `from vadbench.run import evaluate` imports a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return {m for m in found if m in MODULES and m != "vadbench"}


def test_no_import_cycle():
    graph = {name: imports_of(path) - {name} for name, path in MODULES.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The check above is not vacuous: two modules importing each other are reported."""
    a, b = tmp_path / "vadbench" / "a.py", tmp_path / "vadbench" / "b.py"
    a.parent.mkdir()
    a.write_text("def f():\n    from vadbench import b\n")
    b.write_text("from vadbench.a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "MODULES", {"vadbench.a": a, "vadbench.b": b})
    with pytest.raises(AssertionError, match="vadbench.a -> vadbench.b -> vadbench.a"):
        test_no_import_cycle()


def test_modules_fit_a_screenful_of_screens():
    long = {name: n for name, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_stages_flow_one_way():
    """launch never trains (runs go through the notebook); report, records and config never touch run code."""
    for name, path in MODULES.items():
        deps = imports_of(path)
        if name.startswith("vadbench.launch"):
            assert {d for d in deps if d.startswith("vadbench.run")} == set(), name
        if name.startswith(("vadbench.report", "vadbench.records", "vadbench.config", "vadbench.data.registry")):
            assert {d for d in deps if d.startswith(("vadbench.run", "vadbench.models", "vadbench.launch"))} == set(), name


def test_report_and_records_import_without_torch():
    code = (f"import importlib, sys\nfor m in {TORCH_FREE!r}:\n    importlib.import_module(m)\n"
            "print(sorted(n for n in ('torch', 'anomalib', 'lightning') if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]
