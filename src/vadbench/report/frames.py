"""Small helpers over the records frame (vadbench.records.records_frame) shared by the report's modules."""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from vadbench.records import is_replay


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


#: Reader's words for where thresholds were fitted (records' `val_source`) and the pixel protocol.
THRESHOLDS_FROM = {"train": "held-out train images", "test": "the test set", "test_half": "half of the test set"}
PIXELS_AT = {"input": "input size", "original": "original size"}


def protocol_tag(protocol: Any, val_source: Any, pixel_protocol: Any, short: bool = False) -> str:
    """One line naming how numbers were made: 'honest · thresholds: held-out train images · pixels: input size'
    (short: 'honest · train · input'), led by 'REPLAY' for a replay of a study's protocol (records.is_replay)."""
    if short:
        text = f"{protocol} · {val_source} · {pixel_protocol}"
    else:
        text = (f"{protocol} · thresholds: {THRESHOLDS_FROM.get(str(val_source), val_source)} · "
                f"pixels: {PIXELS_AT.get(str(pixel_protocol), pixel_protocol)}")
    return f"REPLAY · {text}" if is_replay(protocol, val_source) else text
