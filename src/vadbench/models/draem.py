"""DRÆM as anomalib builds it, with the official code's choices as params (VitjanZ/DRAEM).

Where anomalib 2.7 and the authors' code differ, `DraemParams` selects (docs/models.md):

* image score: test_DRAEM.py takes the max of the mask map after a 21x21 mean filter (`avg_pool2d`, stride 1,
  zero padding counted); anomalib the raw max (`score_smoothing: 21` vs `0`);
* schedule: train_DRAEM.py's MultiStepLR x0.2 at 80 % / 90 % of the epochs; anomalib x0.1 at epochs 400 / 600;
* normal images: data_loader.py rotates them (before any anomaly is pasted) with probability 0.3 by an angle in
  [-90, 90] degrees; anomalib does not;
* initialisation: train_DRAEM.py draws conv weights from N(0, 0.02) and batch-norm scales from N(1, 0.02);
  anomalib keeps PyTorch's defaults;
* blend: the official opacity of the pasted texture lies in (0.2, 1]; anomalib's `beta` in [0.1, 1.0].
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from anomalib.models import Draem
from torch import nn
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from vadbench.config import DraemParams
from vadbench.models import schedules


class ChoicesDraem(Draem):
    """anomalib's Draem with the official code's rotation, schedule, initialisation and image score when asked."""

    def __init__(self, choices: DraemParams, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.choices = choices
        if choices.weight_init == "official":
            self.model.apply(official_init)
        if choices.score_smoothing:
            smooth_image_scores(self.model, choices.score_smoothing)

    def training_step(self, batch: Any, *args: Any, **kwargs: Any) -> Any:
        """anomalib's step, on a batch whose normal images were first rotated as the official loader does."""
        if self.choices.rotation_probability > 0:
            rotated = rotate_some(batch.image, self.choices.rotation_probability, self.choices.rotation_degrees)
            batch = batch.update(in_place=False, image=rotated)
        return super().training_step(batch, *args, **kwargs)

    def configure_optimizers(self) -> Any:
        """anomalib's Adam and MultiStepLR, or train_DRAEM.py's schedule (`lr_schedule: official`)."""
        if self.choices.lr_schedule == "anomalib":
            return super().configure_optimizers()
        optimizer = torch.optim.Adam(params=self.model.parameters(), lr=schedules.DRAEM_LR)
        return schedules.draem_official(optimizer, self.trainer.max_epochs or -1, self.trainer.max_steps)


def rotate_some(images: torch.Tensor, probability: float, degrees: float) -> torch.Tensor:
    """Each image rotated with `probability` by an angle uniform in [-degrees, degrees] (bilinear, black corners)."""
    chosen = torch.nonzero(torch.rand(len(images)) < probability).flatten().tolist()
    if not chosen:
        return images
    out = images.clone()
    for i in chosen:
        angle = float(torch.empty(1).uniform_(-degrees, degrees))
        out[i] = TF.rotate(images[i], angle, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return out


def official_init(module: nn.Module) -> None:
    """train_DRAEM.py's weights_init: conv weights N(0, 0.02); batch-norm weights N(1, 0.02), biases 0."""
    name = type(module).__name__
    if "Conv" in name:
        module.weight.data.normal_(0.0, 0.02)
    elif "BatchNorm" in name:
        module.weight.data.normal_(1.0, 0.02)
        module.bias.data.fill_(0)


def smoothed_max(anomaly_map: torch.Tensor, window: int) -> torch.Tensor:
    """Per image: the max of the map after a window x window mean filter (zero padding counted, as avg_pool2d does)."""
    maps = anomaly_map if anomaly_map.dim() == 4 else anomaly_map.unsqueeze(1)
    pooled = F.avg_pool2d(maps, window, stride=1, padding=window // 2)
    return torch.amax(pooled, dim=(-3, -2, -1))


def smooth_image_scores(model: nn.Module, window: int) -> None:
    """Make the torch model's inference output score images by `smoothed_max` (its anomaly map is unchanged)."""

    def rescore(module: nn.Module, inputs: Any, output: Any) -> Any:
        if module.training:
            return None
        return output._replace(pred_score=smoothed_max(output.anomaly_map, window))

    model.register_forward_hook(rescore)


def record_facts(choices: DraemParams) -> dict[str, str]:
    """The record's statement of the choices where anomalib and the official code differ."""
    k, p, degrees = choices.score_smoothing, choices.rotation_probability, choices.rotation_degrees
    score = f"max of the {k}x{k} mean-filtered mask map" if k else "raw max of the mask map (anomalib)"
    if k == 21:
        score += " (official test_DRAEM.py)"
    rotation = f"p {p:g}, uniform in [-{degrees:g}, {degrees:g}] degrees" if p else "none (anomalib)"
    init = ("official: conv N(0, 0.02), batch norm N(1, 0.02)" if choices.weight_init == "official" else
            "anomalib (PyTorch defaults)")
    return {"image_score": score, "normal_rotation": rotation,
            "blend_opacity": f"[{choices.beta[0]:g}, {choices.beta[1]:g}]", "weight_init": init}
