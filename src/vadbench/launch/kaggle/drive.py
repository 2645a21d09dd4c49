"""Drive an experiment on Kaggle from push to pulled records: `vadbench kaggle drive X.yaml`.

The loop a user would otherwise run by hand for days. It first settles what an earlier drive left (polls
its running shards, pulls those that ended), writes the shards whose runs have no finished record in
the runs root, and checks every dataset they attach and the code dataset through the API before
anything is uploaded (`datasets.preflight`). Then, until nothing is running: it pushes shards while
fewer than `max_gpu_sessions` of its kernels run and the weekly GPU quota left fits the next shard's
estimate (`hours`); polls the running ones (waiting `poll_s`, doubled while nothing changes, up to
`poll_max_s`); pulls each kernel as it ends, checks its records against its shard_status.json, and
writes the shard again with its runs left (deferred, or never started) when the session finished at
least one. Every step is recorded in the manifest first (`manifest`), so after Ctrl-C or a reboot
`drive` again goes on where it stopped and never pushes or pulls a finished shard twice.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vadbench import records
from vadbench.config import load_experiment
from vadbench.launch.kaggle import datasets, hours, manifest, pull, push, rules
from vadbench.launch.kaggle.api import KaggleApi, KaggleApiBoundary, KaggleUnavailable
from vadbench.launch.kaggle.spec import KaggleSpec, load_kaggle_spec, resolve_owner

log = logging.getLogger(__name__)
DATASET_POLL_S = 10.0  # between status asks while the code dataset is processed


@dataclass
class DriveResult:
    """How a drive ended: shards complete with nothing left, and those left with the reason."""

    complete: list[str] = field(default_factory=list)
    left: dict[str, str] = field(default_factory=dict)  # slug -> why it is not done
    missing: list[str] = field(default_factory=list)  # finished runs whose record did not come
    quota_stop: str = ""

    @property
    def exit_code(self) -> int:
        return 1 if self.left or self.missing else 0


class Driver:
    """One experiment's drive: the manifest in memory, saved after every step."""

    def __init__(self, params_file: Path | str, out_root: Path, spec: KaggleSpec, shard_by: list[str], owner: str,
                 runs_root: Path, api: KaggleApi, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
        self.params_file, self.out_root, self.spec, self.shard_by = params_file, out_root, spec, shard_by
        self.owner, self.runs_root, self.api, self.sleep, self.clock = owner, runs_root, api, sleep, clock
        self.exp = load_experiment(params_file)
        self.exp_root = out_root / self.exp.name
        self.man: dict[str, Any] = manifest.load(self.exp_root) or {"shards": []}
        self.result = DriveResult()
        self.quota_note = ""  # why the next shard does not fit the weekly GPU quota left, if it does not

    # ---- the manifest ----------------------------------------------------------------------------
    def save(self) -> None:
        manifest.save(self.exp_root, self.man)

    def entries(self, *states: str) -> list[dict[str, Any]]:
        return [e for e in self.man["shards"] if e["state"] in states]

    def rewrite(self, only: set[str] | None = None) -> None:
        """Write the shards with runs left (all, or only these) and take up the manifest write_shards saved."""
        self.save()
        push.write_shards(self.params_file, self.out_root, self.spec, self.shard_by, self.owner,
                          pending_in=self.runs_root, only=only)
        self.man = manifest.load(self.exp_root) or {"shards": []}

    def show(self) -> None:
        counts = {e["slug"]: pull.shard_counts(self.out_root, self.exp.name, e["slug"]) for e in self.man["shards"]}
        log.info("%s on Kaggle:\n%s", self.exp.name, manifest.table(self.man, counts, self.clock()))

    # ---- the loop --------------------------------------------------------------------------------
    def run(self) -> DriveResult:
        if self.man["shards"]:
            self.poll()  # what an earlier drive left running or ended unpulled
        self.rewrite()
        todo = self.entries(*manifest.TO_PUSH)
        if todo:
            datasets.check_sources(self.api, self.spec, self.owner, [Path(e["folder"]) for e in todo])
        self.show()
        wait = self.spec.poll_s
        while True:
            changed = self.start()
            if not self.entries(*manifest.ACTIVE) and not self.waiting():
                break
            self.sleep(wait)
            changed = self.poll() or changed
            if changed:
                self.show()
            wait = self.spec.poll_s if changed else min(2 * max(wait, 1.0), self.spec.poll_max_s)
        return self.finish()  # the table was shown at the last change

    def waiting(self) -> bool:
        """Shards to push that the service turned away for now (session limit, unreachable), quota allowing."""
        return not self.quota_note and any(e["message"].startswith("waiting:") for e in self.entries(*manifest.TO_PUSH))

    def start(self) -> bool:
        """Push the next shards while sessions and the quota allow; whether any was pushed."""
        slots = self.spec.max_gpu_sessions - len(self.entries(*manifest.ACTIVE))
        todo = self.entries(*manifest.TO_PUSH)
        if slots <= 0 or not todo:
            return False
        try:
            batch = self.within_quota(todo[:slots])
            if not batch:
                return False
            version = push.ensure_code(self.api, self.man, self.exp_root, self.out_root, self.spec, DATASET_POLL_S,
                                       self.sleep)
        except KaggleUnavailable as exc:  # asked again after the next poll
            for entry in todo:
                manifest.set_state(entry, "written", f"waiting: {exc}", self.clock())
            self.save()
            return False
        pushed, stopped = push.push_shards(self.api, self.man, self.exp_root, batch, self.spec, version, limit=slots)
        if stopped:
            log.info("not pushed now: %s; tried again after the next poll", stopped)
        return bool(pushed)

    def within_quota(self, todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The leading shards whose estimates fit the weekly GPU quota left; at the first that does not, a stop (said
        with the hours used and left)."""
        if not self.spec.enable_gpu:
            return todo
        now = self.clock()
        rates = hours.measured_rates(self.out_root, self.exp.name, self.man["shards"])
        estimates = {e["slug"]: hours.shard_estimate_s(hours.runs_of(self.exp, e), self.spec, rates,
                                                       self.exp.evaluation.val_ratio) for e in self.man["shards"]}
        quota = hours.quota_left(self.api, self.man, self.spec, estimates, now)
        left, batch, note = quota.left_h, [], ""
        for entry in todo:
            need = estimates[entry["slug"]] / 3600
            if need > left:
                note = f"{quota.text()}; {entry['slug']} needs about {need:.1f} h by its estimate: not started"
                break
            batch.append(entry)
            left -= need
        if note and note != self.quota_note:
            log.warning("%s%s", note, "; waiting for the running shards" if self.entries(*manifest.ACTIVE) else "")
        self.quota_note = note
        return batch

    def poll(self) -> bool:
        """Ask the service for each running shard's state; pull those that ended. Whether anything changed."""
        try:
            changed = push.refresh_states(self.api, self.man, self.clock())
        except KaggleUnavailable as exc:
            log.warning("status poll: %s; asking again later", exc)
            return False
        self.save()
        for slug in [e["slug"] for e in self.entries(*manifest.ENDED) if not e.get("pulled") and e["sessions"]]:
            entry = next(e for e in self.man["shards"] if e["slug"] == slug)  # collect may re-read the manifest
            try:
                self.collect(entry)
            except KaggleUnavailable as exc:
                log.warning("pull of %s: %s; trying again later", slug, exc)
                return changed
            changed = True
        return changed

    def collect(self, entry: dict[str, Any]) -> None:
        """Pull an ended shard, check its records; write it again with its runs left if its session made progress."""
        found = pull.PullResult()
        listed = pull.pull_shard(self.api, self.out_root, self.exp.name, entry, self.runs_root, found, entry["state"])
        entry["pulled"] = True
        entry["sessions"][-1]["pulled"] = {k: len(v) for k, v in listed.items()}
        self.result.missing += found.missing
        log.info("pulled %s (%s): %d records added, %d finished, %d failed, %d deferred", entry["slug"], entry["state"],
                 len(found.added), *(len(listed[k]) for k in ("finished", "failed", "deferred")))
        left = self.runs_left(entry)
        if left and len(left) < entry["sessions"][-1]["runs"]:  # the session finished some: the rest next time
            self.rewrite({entry["slug"]})
            log.info("%s: %d runs left, written again for the next session", entry["slug"], len(left))
            return
        if left:
            why = f" ({entry['message']})" if entry["message"] else ""  # the service's failure message, if any
            manifest.set_state(entry, entry["state"], f"{len(left)} runs left and none added by the last session{why}: "
                               f"see `vadbench kaggle logs {entry['slug']}`; drive again once fixed", self.clock())
        self.save()

    def runs_left(self, entry: dict[str, Any]) -> list[list]:
        """The entry's runs without a finished record in the runs root."""
        done = {(r.model.name, r.dataset.name, r.category, r.seed) for r in hours.runs_of(self.exp, entry)
                if records.is_finished(records.run_dir(self.runs_root, r.experiment, r.model.name, r.dataset.name,
                                                       r.category, r.seed), r.config_hash)}
        return [r for r in entry["runs"] if tuple(r) not in done]

    def finish(self) -> DriveResult:
        if self.quota_note and self.entries(*manifest.TO_PUSH):
            self.result.quota_stop = f"{self.quota_note}. `vadbench kaggle drive` again when the quota has reset"
        for entry in self.man["shards"]:
            left = self.runs_left(entry)
            if entry["state"] in manifest.ENDED and not left:
                self.result.complete.append(entry["slug"])
            else:
                reason = entry["message"] or entry["state"]
                if entry["state"] in manifest.TO_PUSH and self.result.quota_stop:
                    reason = "not started: the weekly GPU quota left does not fit it"
                self.result.left[entry["slug"]] = f"{entry['state']}, {len(left)} runs left: {reason}"
        log.info("drive of %s: %d shard(s) complete, %d not%s", self.exp.name, len(self.result.complete),
                 len(self.result.left), f"; {self.result.quota_stop}" if self.result.quota_stop else "")
        for slug, why in self.result.left.items():
            log.warning("%s: %s", slug, why)
        for item in self.result.missing:
            log.error("finished in the kernel, no record received: %s", item)
        return self.result


def drive(params_file: Path | str, out_root: Path | str = "outputs/kaggle", kaggle_params: Path | str | None = None,
          shard_by: list[str] | None = None, runs_root: Path | str = "outputs/runs", api: KaggleApi | None = None,
          accelerator: str | None = None, sleep: Callable[[float], None] = time.sleep,
          clock: Callable[[], float] = time.time) -> DriveResult:
    """Drive the experiment's shards on Kaggle until each has ended and been pulled (or the quota stops it)."""
    spec = load_kaggle_spec(kaggle_params)
    if accelerator:
        rules.check_accelerator(accelerator)
        spec = dataclasses.replace(spec, accelerator=accelerator)
    api = api or KaggleApiBoundary()
    owner, out_root = resolve_owner(spec, api), Path(out_root)
    with manifest.driving(out_root / load_experiment(params_file).name):
        driver = Driver(params_file, out_root, spec, shard_by or ["model", "dataset"], owner, Path(runs_root), api,
                        sleep, clock)
        return driver.run()
