"""Shared test set-up: under pytest-xdist (`make test` runs `-n`), each worker and the processes it starts get an
equal share of the cores, so that two workers' torch thread pools do not fight over the same cores."""
from __future__ import annotations

import os

from vadbench.launch.workers import worker_envs

WORKERS_ENV = "PYTEST_XDIST_WORKER_COUNT"  # set by pytest-xdist in each worker before this file is imported


def share_the_cores(environ: dict[str, str] | os._Environ) -> None:
    """The thread variables `vadbench run --workers N` gives a CPU worker, for one of N xdist workers; outside xdist,
    or where the user set them, nothing changes."""
    workers = int(environ.get(WORKERS_ENV, "0") or 0)
    if workers < 2:
        return
    for var, value in worker_envs(workers, "cpu")[0].items():
        environ.setdefault(var, value)


share_the_cores(os.environ)  # before any test module imports torch


def pytest_collection_modifyitems(items: list) -> None:
    """Files with a test marked slow first, then the rest, each file's tests together and in their order: under
    `-n` with one worker per file the long files start at once instead of last, when the other workers have run out
    of work (and no module fixture is set up twice)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_files)
