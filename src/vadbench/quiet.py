"""Quiet by default: what third-party packages print that a vadbench user cannot act on stays out of sight.

Deprecation warnings raised inside other packages (timm's and anomalib's import-time FutureWarnings, ...)
are hidden wherever vadbench is imported (the command line, run kernels, notebooks); a warning that
vadbench's own code raises or triggers is never hidden. papermill's per-run lines and the kernel's
start-up chatter are turned down the same way. `-v` on the command line, or VADBENCH_VERBOSE=1 in the
environment (which run kernels inherit), shows everything.
"""
from __future__ import annotations

import logging
import os
import warnings

VERBOSE_ENV = "VADBENCH_VERBOSE"
_DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
_NOT_OURS = r"(?!vadbench(\.|$))"  # matched against the module a warning is attributed to
#: Loggers whose INFO lines restate what vadbench logs itself (papermill: input/output notebook, working folder;
#: anomalib: "Initializing <Model> model.").
CHATTY_LOGGERS = ("papermill", "anomalib")
#: Third-party warnings about choices vadbench makes on purpose: an offline backbone passed to anomalib as a module.
ON_PURPOSE = (r"Attribute '\w+' is an instance of `nn.Module` and is already saved during checkpointing",)
#: Kernel options that keep a run kernel's own start-up warnings (e.g. "running over TCP without encryption") quiet.
KERNEL_QUIET_ARGS = ["--IPKernelApp.log_level=ERROR"]


def verbose() -> bool:
    """True when the user asked to see everything (-v, or VADBENCH_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def hide_third_party_deprecations() -> None:
    """Ignore deprecation warnings attributed to modules other than vadbench's (unless verbose)."""
    if verbose():
        return
    for category in _DEPRECATIONS:
        warnings.filterwarnings("ignore", category=category, module=_NOT_OURS)
    for message in ON_PURPOSE:
        warnings.filterwarnings("ignore", message=message, module=_NOT_OURS)


def set_verbose(on: bool) -> None:
    """-v: show every warning and chatty logger again, here and in the kernels started from here."""
    if on:
        os.environ[VERBOSE_ENV] = "1"
        warnings.filters[:] = [f for f in warnings.filters if not (  # (action, message, category, module, lineno)
            f[0] == "ignore" and getattr(f[3], "pattern", None) == _NOT_OURS)]
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if on else logging.WARNING)


def kernel_arguments() -> list[str]:
    """Extra command-line arguments for a run kernel: quiet unless verbose."""
    return [] if verbose() else list(KERNEL_QUIET_ARGS)
