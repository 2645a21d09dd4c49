"""Quiet by default: no third-party deprecation warning, no papermill or Jupyter chatter, a short run log;
`-v` brings everything back, and vadbench's own warnings are never hidden."""
from __future__ import annotations

import subprocess
import sys
import warnings

import yaml

from stand_in import make_project, stand_in_code
from vadbench import quiet

CHATTER = ("FutureWarning", "DeprecationWarning", "Input Notebook", "Output Notebook", "Working directory",
           "Executing notebook", "without encryption")


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from vadbench.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=600, cwd=cwd)


def test_help_prints_no_warning():
    done = cli("--help")
    assert done.returncode == 0 and done.stderr == "" and "vadbench" in done.stdout


def test_third_party_deprecations_are_hidden_ours_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # what an interpreter shows without our filter ...
        quiet.hide_third_party_deprecations()  # ... then ours, as `import vadbench` installs it
        for module in ("timm.models.layers", "anomalib.models.image.dinomaly.components.layers", "vadbench.run.speed",
                       "vadbench"):
            warnings.warn_explicit(f"old API in {module}", FutureWarning, "x.py", 1, module=module)
        warnings.warn_explicit("a real problem", UserWarning, "y.py", 1, module="timm.models")
    assert [str(w.message) for w in seen] == ["old API in vadbench.run.speed", "old API in vadbench", "a real problem"]


def one_run_project(tmp_path, monkeypatch):
    """A stand-in project with one run; the notebook imports anomalib as the real one does."""
    project = make_project(tmp_path, monkeypatch, "import anomalib.models\n" + stand_in_code(), kernel=True)
    exp = yaml.safe_load((project / "exp.yaml").read_text())
    exp["datasets"][0]["categories"] = ["a"]
    (project / "exp.yaml").write_text(yaml.safe_dump(exp))
    return project


def test_one_run_prints_a_short_log_without_chatter(tmp_path, monkeypatch):
    project = one_run_project(tmp_path, monkeypatch)
    done = cli("run", "exp.yaml", cwd=project)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert [c for c in CHATTER if c in out] == [] and len(out.splitlines()) <= 15, out
    assert out.count("outputs/runs/t/dr/d/a/seed0") == 1 and ".partial-" not in out
    table = out[out.index("runs of t:"):].splitlines()
    assert table[1].split() == ["run", "status", "minutes", "image", "AUROC"]
    assert table[2].split()[:4] == ["dr", "d/a", "seed0", "ok"]


def test_verbose_brings_the_warnings_and_papermill_back(tmp_path, monkeypatch):
    project = one_run_project(tmp_path, monkeypatch)
    done = cli("-v", "run", "exp.yaml", "--force", cwd=project)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "FutureWarning" in out and "Input Notebook" in out and "without encryption" in out
