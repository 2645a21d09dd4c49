"""A papermill engine that runs a notebook's code cells in this process: for tests that need a notebook executed,
not a kernel started.

A real kernel costs a process start and a fresh import of torch and anomalib per notebook; in this process
they are imported once. Papermill still parameterizes the notebook, writes the executed copy and turns a
failing cell into its PapermillExecutionError (ename, evalue), so the runner sees what it sees with a kernel.
Each notebook gets a fresh namespace, and the process's working folder, environment, sys.path and root
logger are restored after it. Tests that need a kernel's own behaviour (signals, a separate process's
memory or threads) keep the default engine. A `vadbench` subprocess finds the engine as papermill finds any
installed one, through an entry point: `subprocess_env` puts one on its PYTHONPATH.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

import nbformat
from papermill.engines import Engine, papermill_engines

from vadbench.launch.execute import ENGINE_ENV  # set it to NAME to run the runner's notebooks here

NAME = "vadbench-inprocess"
TESTS = Path(__file__).resolve().parent


@contextlib.contextmanager
def isolated():
    """Restore cwd, environment, sys.path and the root logger's handlers and level after the block."""
    cwd, environ, path = os.getcwd(), dict(os.environ), list(sys.path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
        sys.path[:] = path
        root.handlers[:] = handlers
        root.setLevel(level)


class InProcessEngine(Engine):
    """Executes each code cell with exec() in one namespace per notebook; magics (`%...`) are skipped."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        namespace = {"__name__": "__main__"}
        with isolated():
            for index, cell in enumerate(nb_man.nb.cells):
                if cell.cell_type != "code":
                    continue
                nb_man.cell_start(cell, index)
                source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith("%"))
                try:
                    exec(compile(source, f"<cell {index}>", "exec"), namespace)  # noqa: S102 - a test's own notebook
                except KeyboardInterrupt:
                    raise
                except BaseException as exc:  # a cell's exception becomes the notebook's error, as in a kernel
                    cell.outputs = [nbformat.v4.new_output("error", ename=type(exc).__name__, evalue=str(exc),
                                                           traceback=traceback.format_exception(exc))]
                    nb_man.cell_exception(cell, cell_index=index, exception=exc)
                    nb_man.cell_complete(cell, cell_index=index)
                    return
                nb_man.cell_complete(cell, cell_index=index)


papermill_engines.register(NAME, InProcessEngine)


def subprocess_env(folder: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a `vadbench` subprocess that runs its notebooks with this engine: an
    entry point in the `papermill.engine` group (a dist-info folder under `folder`, on PYTHONPATH with tests/)."""
    info = folder / "vadbench_test_engine-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vadbench-test-engine\nVersion: 0\n")
    (info / "entry_points.txt").write_text(f"[papermill.engine]\n{NAME} = inprocess:InProcessEngine\n")
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env[ENGINE_ENV] = NAME
    return env
