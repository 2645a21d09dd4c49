"""A notebook's parameters, set the papermill way: the one place vadbench writes parameter values into a notebook.

papermill leaves a notebook's `parameters` cell (the defaults) as it is and injects an `injected-parameters`
cell after it, remembering the values in the notebook's metadata (`papermill.parameters`). Setting
parameters again replaces that cell, so values are merged here with those set before. Unlike papermill,
a name the parameters cell does not declare is an error (papermill only warns).
"""
from __future__ import annotations

import ast
from typing import Any

import nbformat
from papermill.parameterize import parameterize_notebook

from vadbench.errors import ConfigError

TAG, INJECTED = "parameters", "injected-parameters"


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The cell tagged `parameters`; ConfigError when there is none."""
    cell = next((c for c in nb.cells if TAG in c.metadata.get("tags", [])), None)
    if cell is None:
        raise ConfigError("the notebook has no cell tagged 'parameters'")
    return cell


def declared(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """The parameters cell's names and default values (literal assignments, in order)."""
    values = {}
    for stmt in ast.parse(parameters_cell(nb).source).body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            values[stmt.target.id] = ast.literal_eval(stmt.value)
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            values[stmt.targets[0].id] = ast.literal_eval(stmt.value)
    return values


def values(nb: nbformat.NotebookNode) -> dict[str, Any]:
    """What the notebook will run with: the defaults, overridden by the values set with `parameterize`."""
    return {**declared(nb), **dict(nb.metadata.get("papermill", {}).get("parameters", {}))}


def parameterize(nb: nbformat.NotebookNode, new: dict[str, Any]) -> nbformat.NotebookNode:
    """The notebook with these values set (merged with those set before) in papermill's injected cell."""
    unknown = sorted(set(new) - set(declared(nb)))
    if unknown:
        raise ConfigError(f"the notebook's parameters cell declares no {unknown}; declared: {sorted(declared(nb))}")
    merged = {**dict(nb.metadata.get("papermill", {}).get("parameters", {})), **new}
    nb.metadata.setdefault("papermill", nbformat.NotebookNode())
    for cell in nb.cells:  # papermill reads every cell's tags, as its own notebook loader provides them
        cell.metadata.setdefault("tags", [])
    return parameterize_notebook(nb, merged, kernel_name="python3", language="python")
