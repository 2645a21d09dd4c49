"""Training steps of a run, from the published train-image counts and its budget: the arithmetic behind a Kaggle
shard's deadline (inside the kernel), its hours estimate and the hours table (on your machine)."""
from __future__ import annotations

import math

from vadbench.config import RunSpec


def run_steps(run: RunSpec, val_ratio: float) -> int | None:
    """Training steps of one run: max_steps, or max_epochs x ceil(train images / batch size) when epochs bound first.

    The train images are the published count left after the validation hold-out (`val_ratio`) and
    undersampling. Where a dataset publishes no per-category counts (WFDD, folders, the demo) the
    steps are known only when max_steps bounds them (then max_steps, an upper bound); else None.
    """
    from vadbench.data.splits import split_sizes, undersampled_count
    from vadbench.registry import MVTEC_AD_COUNTS, VISA_COUNTS

    budget = run.model.train
    cap = budget.max_steps if budget.max_steps > 0 else None
    counts = {"mvtec_ad": MVTEC_AD_COUNTS, "visa": VISA_COUNTS}.get(run.dataset.kind, {}).get(run.category)
    if counts is None or budget.max_epochs <= 0:
        return cap
    images = undersampled_count(split_sizes(counts[0], val_ratio)[0], run.dataset.train_ratio)
    by_epochs = budget.max_epochs * math.ceil(images / budget.batch_size)
    return min(by_epochs, cap) if cap is not None else by_epochs


def training_steps(runs: list[RunSpec], val_ratio: float) -> int | None:
    """Training steps of all the runs; None when one run's are unknown (see `run_steps`)."""
    steps = [run_steps(run, val_ratio) for run in runs]
    return None if any(s is None for s in steps) else sum(s for s in steps if s is not None)
