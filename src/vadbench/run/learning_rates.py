"""What the optimizer really applied: the learning rate at the first step, at every change and at the last step.

Read during training, so a schedule that never fires (anomalib's per-epoch EfficientAD drop, vadbench.models.schedules)
shows in every record rather than passing silently.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class LearningRates(Callback):
    """Records the learning rate the optimizer applies at the first step, at every change and at the last step.

    Read from the optimizers' param groups before each training batch, i.e. the rate that batch's step uses.
    Each entry: {step, epoch, lr}; lr is a list when the param groups differ.
    """

    def __init__(self) -> None:
        self.trace: list[dict[str, Any]] = []
        self._last: dict[str, Any] | None = None

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        rates = [group["lr"] for optimizer in trainer.optimizers for group in optimizer.param_groups]
        if not rates:
            return
        lr = rates[0] if len(set(rates)) == 1 else rates
        self._last = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch), "lr": lr}
        if not self.trace or self.trace[-1]["lr"] != lr:
            self.trace.append(self._last)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._last is not None and self.trace[-1] is not self._last:
            self.trace.append(self._last)
