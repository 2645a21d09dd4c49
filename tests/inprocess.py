"""A papermill engine that runs a notebook's code cells in this process: for tests that need a notebook executed,
not a kernel started.

A real kernel costs a process start and a fresh import of torch and anomalib per notebook; in this process
they are imported once. Papermill still parameterizes the notebook, writes the executed copy and turns a
failing cell into its PapermillExecutionError (ename, evalue), so the runner sees what it sees with a kernel.
Each notebook gets a fresh namespace, and the process's working folder, environment, sys.path and root
logger are restored after it. Tests that need a kernel's own behaviour (signals, a separate process's
memory or threads) keep the default engine.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

import nbformat
from papermill.engines import Engine, papermill_engines

from vadbench.launch.execute import ENGINE_ENV  # noqa: F401 - set it to NAME to run the runner's notebooks here

NAME = "vadbench-inprocess"


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
