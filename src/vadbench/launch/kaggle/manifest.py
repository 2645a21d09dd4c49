"""An experiment's Kaggle manifest (`<out>/<experiment>/shards.json`): its shards and what became of each.

A shard's `state`, with the transitions `push`, `drive`, `status` and `pull` make:

* `written`: its kernel folder is written, not pushed yet (also after a push refused because the
  account's GPU sessions were all busy: it waits for one, the refusal in `message`);
* `never pushed`: a push was refused for another reason (in `message`); the next `push` or `drive`
  tries again;
* `pushed`: the service took the push (a new kernel version); no session state seen yet;
* `queued`, `running`: the session's state as the service reports it;
* `complete`, `error`: the session ended (a cancelled session is an `error`). `drive` then pulls its
  outputs (`pulled`) and, when runs are left (deferred at the deadline, or never started) and the
  session finished at least one, writes the shard again with those runs: `written`, the next session.

Each push opens a session record (`sessions`: pushed_at, started_at, ended_at, version, code_version,
image pin), whose times give the hours a session used when the service reports no quota. `history`
lists every state with its time. Writes are atomic; `holding_interrupts` keeps Ctrl-C from landing
between a push and its record.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vadbench import records
from vadbench.errors import KaggleSetupError

MANIFEST = "shards.json"
STATES = ("written", "never pushed", "pushed", "queued", "running", "complete", "error")
TO_PUSH, ACTIVE, ENDED = ("written",), ("pushed", "queued", "running"), ("complete", "error")
#: A kernel session's state (api.KERNEL_STATES) as a shard state.
FROM_KERNEL = {"queued": "queued", "running": "running", "cancel_requested": "running", "new_script": "pushed",
               "complete": "complete", "error": "error", "cancel_acknowledged": "error"}


def path_of(exp_root: Path) -> Path:
    return Path(exp_root) / MANIFEST


def load(exp_root: Path) -> dict[str, Any] | None:
    """The manifest, or None."""
    path = path_of(exp_root)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    for entry in data.get("shards", []):
        if "state" not in entry:  # written before states were recorded: pushed again, as push then always did
            entry.update(state="written", message="written before shard states were recorded")
        entry.setdefault("history", [])
        entry.setdefault("sessions", [])
    return data


def load_manifests(out_root: Path | str, experiment: str | None = None) -> list[dict[str, Any]]:
    """The manifests under out_root (one experiment's, or all); KaggleSetupError when there is none."""
    found = [load(p.parent) for p in sorted(Path(out_root).glob(f"{experiment or '*'}/{MANIFEST}"))]
    if not found:
        raise KaggleSetupError(f"no Kaggle shards under {out_root}: run `vadbench kaggle push X.yaml` first")
    return [m for m in found if m is not None]


def save(exp_root: Path, manifest: dict[str, Any]) -> None:
    records.write_json_atomic(path_of(exp_root), manifest)


def params_digest(params_file: Path | str) -> str:
    """sha256 of the params file's text: which params a manifest's shards were written from."""
    return hashlib.sha256(Path(params_file).read_bytes()).hexdigest()


def new_entry(slug: str, kernel_id: str, runs: list, folder: str, old: dict[str, Any] | None,
              now: float | None = None) -> dict[str, Any]:
    """A shard just written (state `written`), keeping the sessions and history of its earlier entry."""
    entry = {"slug": slug, "kernel_id": kernel_id, "runs": [list(r) for r in runs], "folder": folder,
             "state": "written", "message": "", "history": list((old or {}).get("history", [])),
             "sessions": list((old or {}).get("sessions", [])), "pulled": False}
    set_state(entry, "written", "", now)
    return entry


def keeps(old: dict[str, Any] | None, runs: list, pending: bool) -> bool:
    """Whether a shard's earlier entry stands instead of writing it again: it is running, or (not --pending)
    it was pushed with the same runs."""
    if old is None:
        return False
    if old["state"] in ACTIVE:
        return True
    return not pending and old["state"] not in (*TO_PUSH, "never pushed") and old["runs"] == [list(r) for r in runs]


def set_state(entry: dict[str, Any], state: str, message: str = "", now: float | None = None) -> None:
    """Move a shard to a state (one of STATES), noting the time in its history and in its session."""
    if state not in STATES:
        raise ValueError(f"unknown shard state {state!r}; one of {STATES}")
    now = time.time() if now is None else now
    if entry.get("state") != state or not entry["history"]:
        entry["history"].append([state, round(now, 1)])
    entry["state"], entry["message"] = state, message
    session = entry["sessions"][-1] if entry["sessions"] and state not in (*TO_PUSH, "never pushed") else None
    if session is not None:
        if state == "running" and not session.get("started_at"):
            session["started_at"] = round(now, 1)
        if state in ENDED and not session.get("ended_at"):
            session["ended_at"] = round(now, 1)


def open_session(entry: dict[str, Any], version: int | None, url: str, code_version: int | None, image_pin: str,
                 now: float | None = None) -> None:
    """Record a push the service took: a new session, state `pushed`."""
    now = time.time() if now is None else now
    entry["sessions"].append({"pushed_at": round(now, 1), "version": version, "url": url,
                              "code_version": code_version, "image_pin": image_pin, "runs": len(entry["runs"])})
    entry["pulled"] = False
    set_state(entry, "pushed", "", now)


def session_hours(entry: dict[str, Any], now: float, since: float = 0.0) -> float:
    """Hours the shard's sessions ran (from first seen running, else pushed, to ended, else now), after `since`."""
    total = 0.0
    for session in entry["sessions"]:
        start = session.get("started_at") or session.get("pushed_at") or now
        end = session.get("ended_at") or now
        total += max(0.0, end - max(start, since))
    return total / 3600


@contextlib.contextmanager
def driving(exp_root: Path) -> Iterator[None]:
    """Hold the experiment's drive lock for the block: one `push` or `drive` of an experiment at a time."""
    path = Path(exp_root) / ".drive.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise KaggleSetupError(f"another `vadbench kaggle push` or `drive` of {Path(exp_root).name} is running "
                                   f"(pid {fh.read().strip() or '?'}); wait for it, or stop it first") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def holding_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise it: a push and its record are not torn apart."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt


def table(manifest: dict[str, Any], counts: dict[str, dict[str, int] | None], now: float | None = None) -> str:
    """One line per shard: state, runs, what the last pull found, sessions and hours, message."""
    now = time.time() if now is None else now
    rows = [("shard", "state", "runs", "last pull (finished/failed/deferred)", "sessions", "hours", "message")]
    for entry in manifest["shards"]:
        found = counts.get(entry["slug"])
        pulled = "/".join(str(found[k]) for k in ("finished", "failed", "deferred")) if found else "-"
        rows.append((entry["slug"], entry["state"], str(len(entry["runs"])), pulled, str(len(entry["sessions"])),
                     f"{session_hours(entry, now):.2f}", entry["message"][:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows)
