"""The package's shape: stages import one way (no cycles between modules or packages), modules stay small, each
module is known by its own name, notebook parameters are written in one place, the report and records need no torch."""
from __future__ import annotations

import ast
import json
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
              "vadbench.report.markdown", "vadbench.launch.runner", "vadbench.launch.kaggle.push",
              "vadbench.launch.kaggle.pull", "vadbench.registry", "vadbench.locks")
ROOT = SRC.parent
PARAMETERS_HOME = PACKAGE / "launch" / "parameters.py"


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
        if name.startswith(("vadbench.report", "vadbench.records", "vadbench.config", "vadbench.registry")):
            assert {d for d in deps if d.startswith(("vadbench.run", "vadbench.models", "vadbench.launch"))} == set(), name


def test_report_and_records_import_without_torch():
    code = (f"import importlib, sys\nfor m in {TORCH_FREE!r}:\n    importlib.import_module(m)\n"
            "print(sorted(n for n in ('torch', 'anomalib', 'lightning') if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


# ---- packages: the stages as a whole import one way ---------------------------------------------------------

def package_of(module: str) -> str:
    """`vadbench.data` for vadbench.data.checks; a top-level module is its own node (vadbench.config)."""
    return ".".join(module.split(".")[:2])


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles among the packages of a module graph (each module's imports at any depth)."""
    packages: dict[str, set[str]] = {}
    for name, deps in graph.items():
        packages.setdefault(package_of(name), set()).update(package_of(d) for d in deps)
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(packages.get(node, set()) - {node}):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for name in sorted(packages):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_package_cycle():
    graph = {name: imports_of(path) for name, path in MODULES.items()}
    assert [" -> ".join(c) for c in package_cycles(graph)] == []


def test_the_package_check_finds_a_cycle_that_modules_alone_do_not_have():
    """config -> data.registry and data.splits -> config: no module cycle, but a package cycle."""
    graph = {"vadbench.config": {"vadbench.data.registry"}, "vadbench.data.registry": set(),
             "vadbench.data.splits": {"vadbench.config"}}
    assert package_cycles(graph) == [["vadbench.config", "vadbench.data", "vadbench.config"]]


def test_kaggle_sides_stay_apart():
    """The user's side never imports the kernel's at import time; the kernel never calls the Kaggle API."""
    for name, path in MODULES.items():
        if name.startswith("vadbench.launch.kaggle.kernel"):
            assert {d for d in imports_of(path) if d.startswith("vadbench.launch.kaggle") and
                    not d.startswith("vadbench.launch.kaggle.kernel")} == set(), name
            assert "kaggle.api" not in path.read_text(encoding="utf-8"), name
        elif name.startswith("vadbench.launch.kaggle"):
            top = ast.parse(path.read_text(encoding="utf-8")).body
            kernel = [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module
                      and n.module.startswith("vadbench.launch.kaggle.kernel")]
            assert kernel == [], name


# ---- one name per module ---------------------------------------------------------------------------------------

def renaming_aliases(source: str, modules: set[str]) -> list[str]:
    """`from vadbench.x import y as z` / `import vadbench.x.y as z` where vadbench.x.y is a module and z is not y."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vadbench"):
            found += [f"{node.module}.{a.name} as {a.asname}" for a in node.names
                      if a.asname and a.asname != a.name and f"{node.module}.{a.name}" in modules]
        elif isinstance(node, ast.Import):
            found += [f"{a.name} as {a.asname}" for a in node.names
                      if a.asname and a.name in modules and a.asname != a.name.rsplit(".", 1)[-1]]
    return found


def notebook_code(path: Path) -> str:
    """A notebook's code cells as one Python source (IPython magics dropped)."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    lines = [line for c in cells if c["cell_type"] == "code" for line in "".join(c["source"]).splitlines()]
    return "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def test_every_module_is_imported_by_its_own_name():
    sources = {p: p.read_text(encoding="utf-8") for p in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")]}
    sources.update({p: notebook_code(p) for p in (ROOT / "notebooks").glob("*.ipynb")})
    found = {str(p.relative_to(ROOT)): hits for p, text in sources.items() if (hits := renaming_aliases(text, set(MODULES)))}
    assert found == {}


def test_the_alias_check_finds_a_renamed_module():
    source = "from vadbench.data import checks as layouts\nimport vadbench.launch.workers as launchers\n" \
             "from vadbench.cli import main as cli_main\nfrom vadbench.data import checks\n"
    assert renaming_aliases(source, set(MODULES)) == ["vadbench.data.checks as layouts",
                                                      "vadbench.launch.workers as launchers"]


# ---- notebook parameters: one home --------------------------------------------------------------------------------

def parameter_rewrites(source: str) -> list[str]:
    """Functions that write parameter values into a notebook: they mention a parameters tag and set a cell's
    source, or call papermill's parameterize_notebook."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef):
            continue
        inner = list(ast.walk(node))
        tagged = any(isinstance(n, ast.Constant) and n.value in ("parameters", "injected-parameters") for n in inner)
        sets_source = any(isinstance(n, (ast.Assign, ast.AugAssign)) and any(
            isinstance(t, ast.Attribute) and t.attr == "source" for t in getattr(n, "targets", [getattr(n, "target", None)]))
            for n in inner)
        papermill = any(isinstance(n, ast.Name | ast.Attribute) and getattr(n, "id", getattr(n, "attr", "")) ==
                        "parameterize_notebook" for n in inner)
        if (tagged and sets_source) or papermill:
            found.append(node.name)
    return found


def test_notebook_parameters_are_written_in_one_place():
    found = {str(p.relative_to(ROOT)): hits for p in PACKAGE.rglob("*.py")
             if (hits := parameter_rewrites(p.read_text(encoding="utf-8")))}
    assert found == {str(PARAMETERS_HOME.relative_to(ROOT)): ["parameterize"]}


def test_the_parameters_check_finds_a_second_rewrite():
    """The rewrite each of the Kaggle modules once had, and a second papermill call."""
    by_hand = ('''def shard_notebook(params):
    nb = nbformat.read(TEMPLATE, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\\n".join(f"{k} = {v!r}" for k, v in params.items())
    return nb
''')
    again = "def inject(nb, values):\n    return papermill.parameterize.parameterize_notebook(nb, values)\n"
    assert parameter_rewrites(by_hand) == ["shard_notebook"] and parameter_rewrites(again) == ["inject"]


# ---- one meaning per name ---------------------------------------------------------------------------------------

def public_names(sources: dict[str, str]) -> dict[str, list[str]]:
    """Top-level public functions and classes defined in more than one module: name -> modules."""
    homes: dict[str, list[str]] = {}
    for module, source in sources.items():
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                homes.setdefault(node.name, []).append(module)
    return {name: sorted(where) for name, where in homes.items() if len(where) > 1}


def test_each_public_name_means_one_thing():
    """A grep for a function or class lands on one definition (check_category, time_model and speed_rows once
    meant two things each)."""
    assert public_names({name: path.read_text(encoding="utf-8") for name, path in MODULES.items()}) == {}


def test_the_name_check_finds_a_clash():
    found = public_names({"vadbench.run.timing": "def time_model(fn):\n    pass\n",
                          "vadbench.run.speed": "def time_model(spec):\n    pass\ndef _private():\n    pass\n",
                          "vadbench.report.speed": "def _private():\n    pass\n"})
    assert found == {"time_model": ["vadbench.run.speed", "vadbench.run.timing"]}
