"""Where a run ran: device, versions, code commit."""
from __future__ import annotations

import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from vadbench.errors import DeviceError
from vadbench.paths import git_commit


def resolve_device(requested: str) -> torch.device:
    """`auto` picks CUDA when torch can use it, else the CPU; a GPU that torch cannot use is an error naming the fix.

    Asking for `cuda` without one is an error too; `cpu` is always the CPU.
    """
    if requested == "cpu" or (requested in ("auto", "cuda") and torch.cuda.is_available()):
        return torch.device("cuda" if requested != "cpu" else "cpu")
    unusable = unusable_gpu()
    if unusable:
        raise DeviceError(unusable)
    if requested == "cuda":
        raise DeviceError("params ask for device 'cuda' but there is no NVIDIA GPU here (nvidia-smi finds none); "
                          "set device: auto or cpu")
    return torch.device("cpu")


def unusable_gpu() -> str:
    """When nvidia-smi sees a GPU that torch cannot use: what is wrong and which torch to install; else ''."""
    try:
        out = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20, check=True).stdout
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    gpus = [line.split(" (UUID")[0] for line in listed.splitlines() if line.startswith("GPU ")]
    if not gpus:
        return ""
    found = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", out)
    driver_cuda = f"{found.group(1)}.{found.group(2)}" if found else "unknown"
    build = torch.version.cuda or "none (a CPU-only build)"
    index = f"cu{found.group(1)}{found.group(2)}" if found else "cuXYZ"
    return (f"nvidia-smi sees {gpus[0]} (its driver supports CUDA up to {driver_cuda}) but torch {torch.__version__} "
            f"cannot use it (torch's CUDA: {build}). Install a torch built for CUDA {driver_cuda} or older, e.g. "
            f"`pip install torch=={torch.__version__.split('+')[0]} --index-url https://download.pytorch.org/whl/{index}` "
            "(or the newest cuXYZ index not above it), or set device: cpu to run on the CPU on purpose")


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
        info["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)  # fp32 matmuls may run as TF32
        info["tf32_cudnn"] = bool(torch.backends.cudnn.allow_tf32)  # fp32 convolutions may (torch's default: yes)
        info["float32_matmul_precision"] = torch.get_float32_matmul_precision()
    return info


def cuda_driver_version() -> str:
    """The NVIDIA driver version from nvidia-smi, or `unknown`."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"
