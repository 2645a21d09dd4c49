"""Learning-rate schedules: the papers' (EfficientAD per step, DRÆM's official code), what each run will apply, and
what the optimizer really applied (`vadbench.run.learning_rates`).

anomalib 2.7's EfficientAd returns `StepLR(step_size=int(0.95 * steps))` with Lightning's default interval (one
scheduler step per epoch), so with batch size 1 its x0.1 drop comes after 0.95 * steps *epochs*: never within the
run. `lr_schedule: paper` keeps anomalib's StepLR and steps it per step, as the paper's 70,000-step recipe does.
DRÆM's official train_DRAEM.py uses MultiStepLR(milestones=[0.8 * epochs, 0.9 * epochs], gamma=0.2); anomalib
uses milestones [400, 600] and gamma 0.1. Every run records the rates the optimizer held. Imports no torch:
a preflight describes the schedule without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vadbench.config import DraemParams, EfficientAdParams, ModelSpec, TrainSpec

if TYPE_CHECKING:
    import torch

DRAEM_LR = 1e-4  # anomalib's and the official code's Adam learning rate
DRAEM_ANOMALIB_MILESTONES = (400, 600)


def per_step(config: dict[str, Any]) -> dict[str, Any]:
    """anomalib's EfficientAd optimizer config with its StepLR stepped every training step (the paper's schedule)."""
    scheduler = config["lr_scheduler"]
    scheduler.step_size = max(1, scheduler.step_size)  # a run under 2 steps: anomalib's 0 would divide by zero
    return {"optimizer": config["optimizer"], "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def draem_official(optimizer: torch.optim.Optimizer, max_epochs: int, max_steps: int) -> dict[str, Any]:
    """train_DRAEM.py's schedule: x0.2 at 80 % and 90 % of the epochs (of max_steps, per step, when no epochs)."""
    interval, total = ("epoch", max_epochs) if max_epochs > 0 else ("step", max_steps)
    milestones = [int(total * 0.8), int(total * 0.9)]
    from torch.optim.lr_scheduler import MultiStepLR

    scheduler = MultiStepLR(optimizer, milestones=milestones, gamma=0.2)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def describe(spec: ModelSpec) -> str:
    """The schedule a model's run will apply, in words (the dry run lists it; records carry it)."""
    params, train = spec.settings, spec.train
    if isinstance(params, DraemParams):
        return _draem(params, train)
    if isinstance(params, EfficientAdParams):
        return _efficientad(params, train)
    return f"anomalib's own ({spec.kind}: configure_optimizers of the class, if it trains by gradient)"


def _draem(params: DraemParams, train: TrainSpec) -> str:
    if params.lr_schedule == "official":
        unit, total = ("epoch", train.max_epochs) if train.max_epochs > 0 else ("step", train.max_steps)
        first, second = int(total * 0.8), int(total * 0.9)
        return (f"official: Adam lr {DRAEM_LR:g}, x0.2 from {unit} {first:,} and again from {unit} {second:,} "
                f"of {total:,} (train_DRAEM.py's 80 % / 90 %, stepped per {unit})")
    epochs = train.max_epochs if train.max_epochs > 0 else None
    reached = [m for m in DRAEM_ANOMALIB_MILESTONES if epochs is None or m < epochs]
    note = "" if len(reached) == 2 else (f"; in {epochs} epochs only after {reached}" if reached else
                                         f"; neither is reached in {epochs} epochs")
    return f"anomalib: Adam lr {DRAEM_LR:g}, x0.1 from epoch 400 and from epoch 600 (MultiStepLR, per epoch){note}"


def _efficientad(params: EfficientAdParams, train: TrainSpec) -> str:
    base = f"Adam lr {params.lr:g}, weight decay {params.weight_decay:g}"
    steps = f"{train.max_steps:,}" if train.max_steps > 0 and train.max_epochs <= 0 else None
    if params.lr_schedule == "paper":
        where = (f"step {max(1, int(0.95 * train.max_steps)):,} of {steps}" if steps else
                 "95 % of the run's steps (epochs x batches per epoch, counted when training starts)")
        return f"paper: {base}, x0.1 from {where} (StepLR stepped per step)"
    size = f"{max(1, int(0.95 * train.max_steps)):,}" if steps else "0.95 x the run's steps"
    return (f"anomalib: {base}, StepLR(step_size={size}) stepped per epoch: the x0.1 drop comes after {size} epochs, "
            "which a run of more than one image per epoch never reaches")
