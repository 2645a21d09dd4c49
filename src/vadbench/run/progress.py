"""Progress of a run's long loops (training steps, images scored) where its user looks.

Two renderings, one source: in an interactive notebook a text progress bar (tqdm, which JupyterLab updates
in place); in a batch (`vadbench run` sets VADBENCH_PROGRESS=lines for its kernels) plain log lines at
every tenth of the work and at least every PROGRESS_EVERY_S seconds, which stay readable in papermill's
executed notebook and in a Kaggle kernel's log. VADBENCH_PROGRESS=off shows nothing.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from typing import Any

from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

PROGRESS_ENV = "VADBENCH_PROGRESS"
PROGRESS_EVERY_S = 30.0


def progress_mode() -> str:
    """`bar`, `lines` or `off`, from $VADBENCH_PROGRESS (default `bar`)."""
    mode = os.environ.get(PROGRESS_ENV, "bar")
    return mode if mode in ("bar", "lines", "off") else "bar"


class Progress:
    """Counts done units of `total` (None: unknown) and shows them with elapsed time and an estimate of the rest."""

    def __init__(self, what: str, total: int | None, unit: str, mode: str | None = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.mode, self.done = mode or progress_mode(), 0
        self.started = self._last = time.monotonic()
        self._next_tenth = 1
        self._bar = None
        if self.mode == "bar":
            from tqdm.std import tqdm

            self._bar = tqdm(total=total, desc=what, unit=f" {unit}", file=sys.stderr, dynamic_ncols=True,
                             disable=False)

    def update(self, n: int = 1) -> None:
        """Add n done units."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode == "lines" and self._due():
            log.info("%s", self.line())

    def line(self) -> str:
        """`<what>: 40/100 steps, 0m12s elapsed, about 0m18s left`."""
        elapsed = time.monotonic() - self.started
        of = f"/{self.total}" if self.total else ""
        text = f"{self.what}: {self.done}{of} {self.unit}, {_clock(elapsed)} elapsed"
        if self.total and self.done:
            text += f", about {_clock(elapsed / self.done * (self.total - self.done))} left"
        return text

    def close(self) -> None:
        """Show the final count (a line in `lines` mode) and release the bar."""
        if self._bar is not None:
            self._bar.close()
        elif self.mode == "lines":
            log.info("%s (done)", self.line())

    def _due(self) -> bool:
        """True at each further tenth of a known total, or PROGRESS_EVERY_S after the last line."""
        now = time.monotonic()
        tenth = self.total and self.done * 10 >= self._next_tenth * self.total
        if tenth or now - self._last >= PROGRESS_EVERY_S:
            if self.total:
                self._next_tenth = self.done * 10 // self.total + 1
            self._last = now
            return self.done != self.total  # the last one is close()'s
        return False


class TrainingProgress(Callback):
    """Lightning callback: training steps (of the trainer's step budget) as a Progress."""

    def __init__(self, label: str, mode: str | None = None) -> None:
        self.label, self.mode = label, mode
        self.progress: Progress | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        total = trainer.estimated_stepping_batches
        total = int(total) if isinstance(total, (int, float)) and math.isfinite(total) else None
        self.progress = Progress(f"training {self.label}", total, "steps", self.mode)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.progress is not None:
            self.progress.update(trainer.global_step - self.progress.done)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.progress is not None:
            self.progress.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
