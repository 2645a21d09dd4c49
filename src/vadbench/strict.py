"""Strict construction of params dataclasses from YAML: unknown keys and wrong types are errors.

`load_yaml` is the one way every params file (experiments, launchers, Kaggle, references) is read;
`build` constructs a dataclass from plain data. Errors name the key, the file and what is allowed.
Only yaml and the standard library are used here.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from vadbench.errors import ConfigError

T = TypeVar("T")


def load_yaml(path: Path | str, cls: type[T], what: str, check: typing.Callable[[T], None] | None = None) -> T:
    """Read `path` and build `cls` from it; every error names the file.

    what: the kind of file, for the missing-file message (e.g. "params file (see params/experiments/)").
    check: further validation of the built object; its ConfigError is prefixed with the file too.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from None
    try:
        obj = build(cls, {} if data is None else data, "")
        if check is not None:
            check(obj)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return obj


def build(cls: type[T], data: Any, where: str) -> T:
    """Construct dataclass `cls` from a mapping, rejecting unknown keys and wrong types (init fields only)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ConfigError(f"unknown key {_join(where, str(unknown[0]))!r}; allowed here: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing required key {key!r}")
            continue
        kwargs[name] = _coerce(data[name], hints[name], key)
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint; ints are accepted for floats, lists for tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (Union, types.UnionType):
        if value is not None and len(args) == 2 and type(None) in args:  # Optional[X]: X's own error
            return _coerce(value, next(a for a in args if a is not type(None)), key)
        for arg in args:
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not of type {hint}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    return _scalar(value, hint, key)


#: A number in exponent notation that YAML 1.1 (PyYAML) reads as a string: `1e6`, `1.0e6` (no dot or no sign).
EXPONENT_TEXT = re.compile(r"([-+]?)(\d+)(?:\.(\d*))?[eE]([-+]?)(\d+)")


def _scalar(value: Any, hint: Any, key: str) -> Any:
    """Check a scalar: bool is never taken for int, int is taken for float."""
    if hint is Any:
        return value
    if hint in (int, float) and isinstance(value, str) and EXPONENT_TEXT.fullmatch(value):
        sign, whole, frac, exp_sign, exp = EXPONENT_TEXT.fullmatch(value).groups()
        fixed = f"{sign}{whole}.{frac or '0'}e{exp_sign or '+'}{exp}"
        raise ConfigError(f"{key}: {value!r} is read as text by YAML, which needs a dot and a signed exponent: "
                          f"write {fixed}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got bool {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value
