"""A run folder is complete or absent: a run executes into a staging folder beside its final place and is
swapped in only when finished.

Layout beside `<...>/<category>/seed<N>/` (names starting with '.', which `records.find_records` skips):

* `.seed<N>.partial-<pid>/`: the attempt in progress; the notebook gets it as its runs root
  (`output_dir`), so it writes `<that>/<experiment>/<model>/<dataset>/<category>/seed<N>/` and the
  kernel's connection file sits there too;
* `.seed<N>.old-<pid>/`: the previous run folder for the instant of the swap;
* `.seed<N>.failed/`: a failed forced attempt, kept beside the finished run it did not replace.

`recover` (called under the run's lock) removes what an interrupted attempt left and puts back a run
folder that a swap had moved aside.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from vadbench import records
from vadbench.config import RunSpec

log = logging.getLogger(__name__)


class Staging:
    """The staging folder of one attempt at a run."""

    def __init__(self, directory: Path, run: RunSpec) -> None:
        self.directory = directory
        self.root = directory.parent / f".{directory.name}.partial-{os.getpid()}"
        shutil.rmtree(self.root, ignore_errors=True)
        self.run_dir = records.run_dir(self.root, run.experiment, run.model.name, run.dataset.name, run.category,
                                       run.seed)
        self.run_dir.mkdir(parents=True)

    def kernel_manager_class(self) -> type:
        """A jupyter kernel manager whose connection file lives in the staging folder (not in /tmp), so an
        interrupted run leaves none behind."""
        from jupyter_client.manager import AsyncKernelManager

        connection_file = str(self.root / f".kernel-{os.getpid()}.json")

        class StagedKernelManager(AsyncKernelManager):
            def __init__(self, **kwargs) -> None:
                kwargs.setdefault("connection_file", connection_file)
                super().__init__(**kwargs)

        return StagedKernelManager

    def discard(self) -> None:
        """Remove the attempt (an interrupted run): the run folder stays as it was."""
        shutil.rmtree(self.root, ignore_errors=True)

    def commit(self) -> None:
        """Swap the finished attempt in place of the run folder."""
        swap(self.run_dir, self.directory)
        self.discard()

    def commit_failed(self, config_hash: str) -> None:
        """Swap a failed attempt in, unless the folder holds a finished run of this config (a forced rerun):
        that one is kept and the attempt goes to `.seed<N>.failed/`."""
        if not records.is_finished(self.directory, config_hash):
            self.commit()
            return
        kept = self.directory.parent / f".{self.directory.name}.failed"
        shutil.rmtree(kept, ignore_errors=True)
        os.rename(self.run_dir, kept)
        self.discard()
        log.warning("kept the finished run in %s; the failed attempt is in %s", self.directory, kept)


def swap(new: Path, directory: Path) -> None:
    """Put folder `new` at `directory`, replacing what is there (absent only for the instant between two renames)."""
    if not directory.exists():
        os.rename(new, directory)
        return
    old = directory.parent / f".{directory.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(directory, old)
    os.rename(new, directory)
    shutil.rmtree(old, ignore_errors=True)


def recover(directory: Path) -> None:
    """Clean up after interrupted attempts at this run (call it holding the run's lock)."""
    parent = directory.parent
    if not parent.is_dir():
        return
    for old in sorted(parent.glob(f".{directory.name}.old-*")):
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            log.warning("putting back %s, moved aside by an interrupted swap", directory)
            os.rename(old, directory)
    for partial in parent.glob(f".{directory.name}.partial-*"):
        log.info("removing %s, left by an interrupted attempt", partial)
        shutil.rmtree(partial, ignore_errors=True)
