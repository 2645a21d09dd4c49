"""What one run costs through `vadbench run` against the bare anomalib script doing the same work, whole process.

Paired runs, alternating, each timed from process start to exit (wall, and user + system CPU of the child):
`vadbench run` of the demo's DRÆM brick run (demo.yaml cut to that run: the same config, so the same record)
and benchmarks/bare_draem.py. Prints each pair, the medians and their ratio, and the median of each phase of
the run's record (`timing.phases`; `cli` is the rest of the process: start, preflight, staging, locks).
Needs `vadbench demo-data` first; run it alone on the machine, from the project root:

    python benchmarks/run_cost.py --pairs 5
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def one_run_params(folder: Path) -> Path:
    """demo.yaml with only the DRÆM model and the brick category (its run's config is the demo's own)."""
    data = yaml.safe_load((ROOT / "params/experiments/demo.yaml").read_text(encoding="utf-8"))
    data["models"] = [m for m in data["models"] if m["name"] == "draem"]
    data["datasets"][0]["categories"] = ["brick"]
    path = folder / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, user + system CPU seconds) of a child process run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vadbench-run-cost-") as scratch:
        params, runs = one_run_params(Path(scratch)), Path(scratch) / "runs"
        ours = [sys.executable, "-m", "vadbench.cli", "run", str(params), "--force", "--output", str(runs)]
        bare = [sys.executable, str(ROOT / "benchmarks/bare_draem.py")]
        rows, phases = [], []
        for pair in range(args.pairs):
            a, b = timed(ours), timed(bare)
            rows.append((a, b))
            record = json.loads(next(runs.rglob("record.json")).read_text())
            run_phases = dict(record.get("timing", {}).get("phases", {}))
            run_phases["cli"] = a[0] - sum(v for v in run_phases.values() if isinstance(v, int | float))
            phases.append(run_phases)
            print(f"pair {pair + 1}: vadbench run {a[0]:.1f} s wall / {a[1]:.1f} s CPU, "
                  f"bare script {b[0]:.1f} s / {b[1]:.1f} s", flush=True)
    med = [statistics.median(r[i][j] for r in rows) for i in (0, 1) for j in (0, 1)]
    print(f"median: vadbench run {med[0]:.1f} s wall / {med[1]:.1f} s CPU; bare {med[2]:.1f} s / {med[3]:.1f} s; "
          f"ratio {med[0] / med[2]:.2f} wall, {med[1] / med[3]:.2f} CPU ({os.cpu_count()} cores)")
    for name in phases[0]:
        values = [p[name] for p in phases if isinstance(p.get(name), int | float)]
        if values:
            print(f"  {name:<10} {statistics.median(values):6.1f} s")


if __name__ == "__main__":
    main()
