"""Errors a user can fix; the CLI prints their message as one line instead of a traceback."""
from __future__ import annotations


class VadbenchError(Exception):
    """Base of errors whose message names what is wrong and how to fix it."""


class ConfigError(VadbenchError, ValueError):
    """A params file is invalid; the message names the file, the key and the fix."""


class DatasetError(VadbenchError, FileNotFoundError):
    """A dataset root or category is missing or malformed; the message names the path and the fix."""


class InputMissingError(VadbenchError, FileNotFoundError):
    """A model input (anomaly source, teacher, penalty images) is missing; the message says how to fix it."""


class ReportError(VadbenchError, FileNotFoundError):
    """A report cannot be built (e.g. no records); the message says why."""


class ProjectRootError(VadbenchError, FileNotFoundError):
    """The project root (which relative paths resolve against) cannot be found; the message says how to set it."""


class DeviceError(VadbenchError, RuntimeError):
    """The device the params ask for cannot be used (e.g. a GPU torch cannot drive); the message names the fix."""


class OutputError(VadbenchError, OSError):
    """An output folder cannot be created or written; the message names the path and the fix."""


class KaggleSetupError(VadbenchError):
    """Kaggle params, credentials or mounts are missing or wrong; the message says how to fix it."""


USER_ERRORS = (VadbenchError,)
