"""Watch and bring home a pushed experiment: `status`, `logs` and `pull` of its shard kernels.

`status` lists the kernels' states and the last pulled run counts; `pull` downloads finished kernels' outputs
and merges the records into the runs root (idempotent; a differing record is reported, never overwritten);
`logs` prints a kernel's log. All network access goes through `api.KaggleApiBoundary`.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vadbench import records
from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle.api import KaggleApi, KaggleApiBoundary
from vadbench.launch.kaggle.shards import load_manifests

log = logging.getLogger(__name__)


@dataclass
class PullResult:
    """What a pull did."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)


def shard_counts(out_root: Path | str, experiment: str, slug: str) -> dict[str, int] | None:
    """finished/failed/deferred counts of a shard from its last pulled status file, None before a pull."""
    path = Path(out_root) / experiment / "downloads" / slug / records.SHARD_STATUS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {key: len(data.get(key, [])) for key in ("finished", "failed", "deferred")}


def status(out_root: Path | str = "outputs/kaggle", experiment: str | None = None,
           api: KaggleApi | None = None) -> list[tuple[str, str, str, dict[str, int] | None]]:
    """(kernel id, state, message, run counts of the last pull) of every shard's kernel."""
    api = api or KaggleApiBoundary()
    rows = []
    for manifest in load_manifests(out_root, experiment):
        for shard in manifest["shards"]:
            state, message = api.kernel_status(shard["kernel_id"])
            counts = shard_counts(out_root, manifest["experiment"], shard["slug"])
            rows.append((shard["kernel_id"], state, message, counts))
            text = ", ".join(f"{v} {k}" for k, v in counts.items()) if counts else "not pulled yet"
            log.info("%-58s %-9s %d runs: %s %s", shard["kernel_id"], state, len(shard["runs"]), text, message)
    return rows


def logs(slug: str, out_root: Path | str = "outputs/kaggle", api: KaggleApi | None = None) -> str:
    """A shard kernel's log (slug, or owner/slug)."""
    api = api or KaggleApiBoundary()
    ids = [s["kernel_id"] for m in load_manifests(out_root) for s in m["shards"]]
    kernel = next((k for k in ids if k == slug or k.split("/")[1] == slug), None)
    if kernel is None:
        raise KaggleSetupError(f"no shard {slug!r} under {out_root}; `vadbench kaggle status` lists them")
    return api.kernel_logs(kernel)


def pull(out_root: Path | str = "outputs/kaggle", runs_root: Path | str = "outputs/runs",
         experiment: str | None = None, api: KaggleApi | None = None) -> PullResult:
    """Download finished kernels' outputs and merge their run folders into runs_root."""
    api = api or KaggleApiBoundary()
    result = PullResult()
    for manifest in load_manifests(out_root, experiment):
        for shard in manifest["shards"]:
            state, _ = api.kernel_status(shard["kernel_id"])
            if state not in ("complete", "error"):  # an errored kernel may still hold finished runs
                result.not_ready.append(f"{shard['kernel_id']} ({state})")
                continue
            dest = Path(out_root) / manifest["experiment"] / "downloads" / shard["slug"]
            api.download_output(shard["kernel_id"], dest)
            merge_runs(dest / "runs", Path(runs_root), result)
    log.info("pull: %d added, %d already there, %d conflicts, %d kernels not finished", len(result.added),
             len(result.unchanged), len(result.conflicts), len(result.not_ready))
    for item in result.conflicts:
        log.warning("conflict, local record kept: %s", item)
    return result


def merge_runs(source: Path, runs_root: Path, result: PullResult) -> None:
    """Copy each downloaded run folder whose record is new or replaces a failed one; same record = unchanged;
    a different one = conflict (the local record is kept)."""
    for record_path in records.find_records(source):
        run_dir = record_path.parent
        rel = run_dir.relative_to(source)
        target = runs_root / rel
        if (target / records.RECORD_FILE).is_file() and (_status(target) == "ok" or _status(run_dir) != "ok"):
            same = _same_record(record_path, target / records.RECORD_FILE)
            (result.unchanged if same else result.conflicts).append(str(rel))
            continue
        _copy_run(run_dir, target)
        result.added.append(str(rel))


def _status(run_dir: Path) -> str | None:
    try:
        return records.read_record(run_dir).get("status")
    except (OSError, ValueError):
        return None


def _same_record(a: Path, b: Path) -> bool:
    ra, rb = records.read_record(a), records.read_record(b)
    ra.pop("_path", None), rb.pop("_path", None)
    return ra == rb


def _copy_run(src: Path, dst: Path) -> None:
    """Copy a run folder, record.json last (atomically), so a half copy is never a finished run."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        if path.is_file() and path.name != records.RECORD_FILE:
            (dst / path.relative_to(src)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dst / path.relative_to(src))
    records.write_json_atomic(dst / records.RECORD_FILE, json.loads((src / records.RECORD_FILE).read_text()))
