"""Per-run figures (matplotlib only): image, ground truth, heat map and predicted mask."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np

COLUMNS = ("image", "ground truth", "heat map", "predicted mask")


def anomaly_map_grid(examples: dict[str, Any], title: str = "") -> plt.Figure:
    """One row per example image, the four COLUMNS per row."""
    n = len(examples["images"])
    fig, axes = plt.subplots(max(n, 1), 4, figsize=(10, 2.6 * max(n, 1)), squeeze=False)
    for row in range(n):
        image = np.clip(examples["images"][row], 0, 1)
        panels = (image, examples["masks"][row], examples["maps"][row], examples["pred_masks"][row])
        for col, panel in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(panel, cmap=None if col == 0 else ("jet" if col == 2 else "gray"))
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(COLUMNS[col])
        axes[row][0].set_ylabel(examples["titles"][row], fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
