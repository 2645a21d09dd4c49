"""Watch and bring home a pushed experiment: `status`, `logs` and `pull` of its shard kernels.

`status` lists the kernels' states (a shard never pushed as such, without asking the service) and the last
pulled run counts; `pull` downloads ended kernels' outputs, merges the records into the runs root
(idempotent; a differing record is reported, never overwritten) and checks them against the kernel's
shard_status.json; `logs` prints a kernel's log. All network access goes through `api.KaggleApiBoundary`.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from vadbench import records
from vadbench.errors import KaggleSetupError
from vadbench.launch.kaggle import manifest
from vadbench.launch.kaggle.api import MISSING, KaggleApi, KaggleApiBoundary

log = logging.getLogger(__name__)
NEVER_PUSHED = "never pushed"
ENDED = ("complete", "error", "cancel_acknowledged")  # kernel states whose outputs are final


@dataclass
class PullResult:
    """What a pull did."""

    added: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)
    never_pushed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "<kernel>: <run>": finished in the kernel, no record received

    @property
    def exit_code(self) -> int:
        """1 when a record conflicts or a finished run's record did not come, else 0."""
        return 1 if self.conflicts or self.missing else 0


def shard_counts(out_root: Path | str, experiment: str, slug: str) -> dict[str, int] | None:
    """finished/failed/deferred counts of a shard from its last pulled status file, None before a pull."""
    path = Path(out_root) / experiment / "downloads" / slug / records.SHARD_STATUS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return {key: len(data.get(key, [])) for key in ("finished", "failed", "deferred")}


def kernel_state(api: KaggleApi, entry: dict) -> tuple[str, str]:
    """(state, message) of a shard's kernel; "never pushed" for a slug the service does not know (403/404)."""
    state, message = api.kernel_status(entry["kernel_id"])
    waiting = entry["state"] in (*manifest.TO_PUSH, NEVER_PUSHED)
    if state == MISSING:
        return NEVER_PUSHED, entry["message"] if waiting and entry["message"] else message
    if waiting:  # the service shows the session of an earlier push
        message = f"{entry['state']} here ({entry['message'] or 'not pushed yet'}); Kaggle shows an earlier session"
    return state, message


def status(out_root: Path | str = "outputs/kaggle", experiment: str | None = None,
           api: KaggleApi | None = None) -> list[tuple[str, str, str, dict[str, int] | None]]:
    """(kernel id, state, message, run counts of the last pull) of every shard's kernel."""
    api = api or KaggleApiBoundary()
    rows = []
    for man in manifest.load_manifests(out_root, experiment):
        for entry in man["shards"]:
            state, message = kernel_state(api, entry)
            counts = shard_counts(out_root, man["experiment"], entry["slug"])
            rows.append((entry["kernel_id"], state, message, counts))
            text = ", ".join(f"{v} {k}" for k, v in counts.items()) if counts else "not pulled yet"
            log.info("%-58s %-12s %d runs: %s %s", entry["kernel_id"], state, len(entry["runs"]), text, message)
    return rows


def logs(slug: str, out_root: Path | str = "outputs/kaggle", api: KaggleApi | None = None) -> str:
    """A shard kernel's log (slug, or owner/slug), as text."""
    api = api or KaggleApiBoundary()
    ids = [s["kernel_id"] for m in manifest.load_manifests(out_root) for s in m["shards"]]
    kernel = next((k for k in ids if k == slug or k.split("/")[1] == slug), None)
    if kernel is None:
        raise KaggleSetupError(f"no shard {slug!r} under {out_root}; `vadbench kaggle status` lists them")
    return log_text(api.kernel_logs(kernel))


def log_text(raw: str) -> str:
    """A kernel's log as the service keeps it (a JSON list of {stream_name, time, data}) as plain text: the data
    joined in order; a log in any other form as it is."""
    try:
        entries = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "data" in e for e in entries):
        return raw
    return "".join(str(e["data"]) for e in entries)


def pull(out_root: Path | str = "outputs/kaggle", runs_root: Path | str = "outputs/runs",
         experiment: str | None = None, api: KaggleApi | None = None) -> PullResult:
    """Download ended kernels' outputs, merge their run folders into runs_root, check them against shard_status.json."""
    api = api or KaggleApiBoundary()
    result = PullResult()
    for man in manifest.load_manifests(out_root, experiment):
        for entry in man["shards"]:
            state, message = kernel_state(api, entry)
            if state == NEVER_PUSHED:
                result.never_pushed.append(f"{entry['kernel_id']} ({message})")
            elif state not in ENDED:  # an errored kernel may still hold finished runs
                result.not_ready.append(f"{entry['kernel_id']} ({state})")
            else:
                pull_shard(api, Path(out_root), man["experiment"], entry, Path(runs_root), result, state)
    log.info("pull: %d added, %d already there, %d conflicts, %d kernels not finished, %d never pushed, %d finished "
             "runs without a record", len(result.added), len(result.unchanged), len(result.conflicts),
             len(result.not_ready), len(result.never_pushed), len(result.missing))
    for item in result.conflicts:
        log.warning("conflict, local record kept: %s", item)
    for item in result.never_pushed:
        log.warning("never pushed: %s", item)
    return result


def pull_shard(api: KaggleApi, out_root: Path, experiment: str, entry: dict, runs_root: Path, result: PullResult,
               state: str) -> dict[str, list[str]]:
    """Download one ended kernel's outputs, merge its records, check them; its shard_status.json lists."""
    dest = out_root / experiment / "downloads" / entry["slug"]
    received = {p.resolve() for p in api.download_output(entry["kernel_id"], dest)}
    for old in [p for p in dest.rglob("*") if p.is_file() and p.resolve() not in received]:
        old.unlink()  # an earlier session's file: the downloads hold the last session's outputs only
    merge_runs(dest / "runs", runs_root, result)
    return check_received(dest, experiment, entry, state, result)


def check_received(dest: Path, experiment: str, entry: dict, state: str, result: PullResult) -> dict[str, list[str]]:
    """Cross-check the kernel's shard_status.json against the records received: a finished run without its record
    is an error naming it (in result.missing); runs the kernel never reached are logged."""
    path = dest / records.SHARD_STATUS_FILE
    if not path.is_file():
        if state == "complete":
            result.missing.append(f"{entry['kernel_id']}: no {records.SHARD_STATUS_FILE} in the outputs")
        log.error("%s ended (%s) without %s: no run started (`vadbench kaggle logs %s` says why)", entry["kernel_id"],
                  state, records.SHARD_STATUS_FILE, entry["slug"])
        return {"finished": [], "failed": [], "deferred": []}
    listed = json.loads(path.read_text())
    runs = {f"{m} {d}/{c} seed{s}": (m, d, c, s) for m, d, c, s in entry["runs"]}
    for label in listed.get("finished", []):
        m, d, c, s = runs.get(label, (None,) * 4)
        if m is None or not (records.run_dir(dest / "runs", experiment, m, d, c, int(s)) / records.RECORD_FILE).is_file():
            result.missing.append(f"{entry['kernel_id']}: {label}")
            log.error("%s: %s finished in the kernel but its record is not in the outputs", entry["kernel_id"], label)
    seen = {label for key in ("finished", "failed", "deferred") for label in listed.get(key, [])}
    for label in runs:
        if label not in seen:
            log.warning("%s: %s never started (the session ended first)", entry["kernel_id"], label)
    return {key: list(listed.get(key, [])) for key in ("finished", "failed", "deferred")}


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
