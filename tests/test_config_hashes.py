"""Config hashes of the shipped params files stay what they were: records made before a change keep matching their runs.

tests/data/config_hashes.json holds, for every run of every file under params/experiments, the hash its records
carry. A change that alters a hash on purpose (a recipe that now trains differently) updates its entries in the
same commit and says why; a refactor never does.
"""
from __future__ import annotations

import json
from pathlib import Path

from vadbench.config import expand_runs, load_experiment

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = json.loads((ROOT / "tests" / "data" / "config_hashes.json").read_text())


def test_every_shipped_run_keeps_its_config_hash(monkeypatch):
    monkeypatch.chdir(ROOT)
    now = {}
    for path in sorted({key.split("|")[0] for key in GOLDEN}):
        for run in expand_runs(load_experiment(path)):
            now[f"{path}|{run.label}"] = run.config_hash
    changed = {key: (GOLDEN[key], now.get(key)) for key in GOLDEN if now.get(key) != GOLDEN[key]}
    assert changed == {}
