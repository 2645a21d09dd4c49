"""Speed in the report: the GPU-grade `speed` rows of records (or of `vadbench speed`) per model × device, with
published figures beside like-with-like rows only: a paper's fp16 batch-1 latency beside our fp16 batch-1
rows, its batch-16 throughput beside our fp16 batch-16 on-device row. Never imports torch."""
from __future__ import annotations

import json

import pandas as pd

from vadbench.records import IDENTITY
from vadbench.report.frames import json_dict
from vadbench.report.references import MEAN, references_frame

#: Speed rows are keyed by the model alone: thresholds and pixel protocols (records.PROTOCOLS) do not change the time.
SPEED_GROUP = ("experiment", "dataset", "model")
SPEED_ROW_COLUMNS = ("protocol", "precision", "batch_size", "requested_batch_size", "channels_last",
                     "latency_ms_median", "latency_ms_p90", "img_per_s", "note")


def speed_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per ok run × `speed` row (JSON column of records_frame): identity, model kind and size, device, figures."""
    rows = []
    for _, record in frame.iterrows():
        text = record.get("speed")
        if record.get("status") != "ok" or not isinstance(text, str):
            continue
        config = json_dict(record.get("config"))
        kind = (config.get("model") or {}).get("kind", "")
        size = (config.get("model_params") or {}).get("model_size", "") if kind == "efficientad" else ""
        for row in json.loads(text):
            rows.append({**{k: record.get(k) for k in IDENTITY}, "model_kind": kind, "model_size": size,
                         "device": record.get("device"), "device_name": record.get("device_name"),
                         **{k: row.get(k) for k in SPEED_ROW_COLUMNS}})
    return pd.DataFrame(rows, columns=[*IDENTITY, "model_kind", "model_size", "device", "device_name",
                                       *SPEED_ROW_COLUMNS])


def speed_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model × device (and experiment, dataset): each protocol × precision × batch size, medians over runs."""
    rows = speed_rows(frame)
    keys = ["experiment", "dataset", "model", "device", "device_name", "protocol", "precision", "batch_size"]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "n_runs", "latency_ms_median", "img_per_s"])
    grouped = rows.groupby(keys, dropna=False, sort=True)
    table = grouped[["latency_ms_median", "img_per_s"]].median()
    table.insert(0, "n_runs", grouped.size())
    return table.reset_index()


def like_with_like(frame: pd.DataFrame) -> pd.DataFrame:
    """Per experiment × dataset × model: our figures comparable with a paper's: fp16 batch-1 latency (host-to-host
    where measured, else on-device) and fp16 batch-16 on-device throughput, medians over runs; NaN without such rows."""
    rows = speed_rows(frame)
    rows = rows.loc[rows["precision"] == "fp16"] if len(rows) else rows
    out = []
    for key, sub in rows.groupby(list(SPEED_GROUP), dropna=False, sort=True) if len(rows) else []:
        single = sub.loc[sub["batch_size"] == 1]
        host = single.loc[single["protocol"] == "host-to-host"]
        batch = sub.loc[(sub["batch_size"] == 16) & (sub["protocol"] == "on-device")]
        out.append({**dict(zip(SPEED_GROUP, key)), "device_name": ", ".join(sorted(set(sub["device_name"].dropna()))),
                    "latency_ms": (host if len(host) else single)["latency_ms_median"].median(),
                    "img_per_s": batch["img_per_s"].median()})
    return pd.DataFrame(out, columns=[*SPEED_GROUP, "device_name", "latency_ms", "img_per_s"])


def with_published(table: pd.DataFrame, reference_paths: list) -> pd.DataFrame:
    """Published latency beside fp16 batch-1 rows, published throughput beside the fp16 batch-16 on-device row.

    table: speed rows with model_kind, model_size, protocol, precision and batch_size columns.
    """
    refs = references_frame(list(reference_paths))
    refs = refs.loc[refs["category"] == MEAN]
    table = table.assign(published_latency_ms=float("nan"), published_img_per_s=float("nan"), published_source="")
    for i, row in table.iterrows():
        found = refs.loc[(refs["model_kind"] == row["model_kind"]) & refs["model_size"].isin(["", row["model_size"]])]
        found = found.dropna(subset=["model_latency_ms_median", "model_img_per_s"], how="all")
        if found.empty or row["precision"] != "fp16":
            continue
        ref = found.iloc[0]
        if row["batch_size"] == 1:
            table.loc[i, ["published_latency_ms", "published_source"]] = [ref["model_latency_ms_median"], ref["source"]]
        elif row["batch_size"] == 16 and row["protocol"] == "on-device":
            table.loc[i, ["published_img_per_s", "published_source"]] = [ref["model_img_per_s"], ref["source"]]
    return table
