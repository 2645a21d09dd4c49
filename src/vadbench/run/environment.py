"""Where a run ran: device, versions, code commit."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from vadbench.paths import git_commit


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when present; asking for `cuda` without one is an error naming the fix."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("params ask for device 'cuda' but torch sees no CUDA device; set device: auto or cpu")
    return torch.device(requested)


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def environment_info(device: torch.device) -> dict[str, object]:
    """The `environment` section of a record."""
    info: dict[str, object] = {
        "device": device.type,
        "device_name": device_name(device),
        "torch_version": torch.__version__,
        "anomalib_version": _version("anomalib"),
        "python_version": platform.python_version(),
        "vadbench_version": _version("vadbench"),
        "git_commit": git_commit(),
        "torch_threads": torch.get_num_threads(),
        "hostname": platform.node(),
        "project_root": str(Path.cwd().resolve()),  # what relative paths in the params resolved against
    }
    if device.type == "cuda":
        info["cuda_version"] = torch.version.cuda
        info["cuda_driver_version"] = cuda_driver_version()
        info["cudnn_version"] = torch.backends.cudnn.version()
    return info


def cuda_driver_version() -> str:
    """The NVIDIA driver version from nvidia-smi, or `unknown`."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"
