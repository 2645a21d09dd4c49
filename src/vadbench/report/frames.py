"""Small helpers over the records frame (vadbench.records.records_frame) shared by the report's modules."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd


def with_columns(frame: pd.DataFrame, columns: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Copy of `frame` that has every column; a missing column is all-NaN, never zero."""
    frame = frame.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = np.nan
    return frame


def is_ok(frame: pd.DataFrame) -> pd.Series:
    status = frame["status"] if "status" in frame.columns else pd.Series(pd.NA, index=frame.index)
    return status.astype("string").eq("ok").fillna(False).astype(bool)


def json_dict(text: Any) -> dict[str, Any]:
    """A JSON column's value (e.g. a record's config) as a dict; {} when missing, unreadable or not an object."""
    if not isinstance(text, str):
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
