"""Launch pending runs somewhere: N local worker processes, or submitit jobs (Slurm or its local executor).

Every launcher calls the same `execute.execute_run` (one papermill execution per run), so records land
in the same place with the same content whichever launcher ran them. Worker processes are pinned:

* on CUDA, one GPU per worker (`CUDA_VISIBLE_DEVICES`), `--workers` defaulting to the visible GPUs;
* on CPU, each worker gets `max(1, cores // workers)` threads (`OMP_NUM_THREADS`, `MKL_NUM_THREADS`,
  and so torch's intra-op threads in the papermill kernel), so workers do not oversubscribe the cores.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from vadbench.config import RunSpec
from vadbench.errors import ConfigError
from vadbench.launch.execute import Outcome, execute_run
from vadbench.strict import load_yaml

log = logging.getLogger(__name__)

LAUNCHERS = ("local", "submitit-local", "slurm")
Launched = Literal["ok", "failed", "locked", "finished", "deferred"]  # an Outcome, or not started (the gate said no)
Launcher = Literal["local", "submitit-local", "slurm"]
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class SlurmSpec:
    """Slurm resources of one run's job (params/launchers/slurm.yaml)."""

    partition: str = ""
    time_min: int = 240
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: int = 32
    account: str = ""
    array_parallelism: int = 16


def load_slurm_spec(path: Path | str | None) -> SlurmSpec:
    """Read a Slurm params file strictly (unknown keys and wrong types name the key and the file)."""
    if path is None:
        return SlurmSpec()
    return load_yaml(path, SlurmSpec, "launcher params file (see params/launchers/slurm.yaml)")


def visible_gpus() -> list[str]:
    """GPU ids a worker may be pinned to: CUDA_VISIBLE_DEVICES if set, else torch's device count."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def worker_envs(workers: int | None, device: str) -> list[dict[str, str]]:
    """The environment overrides of each worker slot.

    CUDA (device `cuda`, or `auto` with GPUs visible): one GPU per slot, cycling if there are more
    workers than GPUs; default one worker per GPU. CPU: `cores // workers` threads per slot.
    """
    gpus = visible_gpus() if device != "cpu" else []
    if device == "cuda" and not gpus:
        raise ConfigError("params ask for device 'cuda' but no GPU is visible; set device: auto or cpu")
    if workers is None:
        workers = len(gpus) or 1
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(workers)]
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return [{var: threads for var in THREAD_VARS} for _ in range(workers)]


class RunGate(Protocol):
    """Asked before each run starts (False defers it) and told when it ends: a Kaggle shard's deadline."""

    def __call__(self, run: RunSpec, index: int, total: int) -> bool: ...
    def done(self, run: RunSpec) -> None: ...


# ---- local worker processes ------------------------------------------------------------------

def _init_worker(slots: "mp.Queue[dict[str, str]]") -> None:
    """Take one slot's environment for the life of this worker process."""
    env = slots.get()
    os.environ.update(env)
    log.debug("worker %d pinned: %s", os.getpid(), env)


def _execute(run: RunSpec, params_file: str, output_root: str, directory: str, force: bool = False) -> Outcome:
    return execute_run(run, params_file, Path(output_root), Path(directory), force=force)


def launch_workers(pending: list[tuple[RunSpec, Path]], params_file: str, output_root: Path,
                   envs: list[dict[str, str]], force: bool = False,
                   gate: RunGate | None = None) -> Iterator[tuple[RunSpec, Launched]]:
    """Run pending runs on len(envs) worker processes (spawned, each pinned to one slot).

    A run is handed to a worker only when one is free, after the gate (if any) allows it; the gate is told
    when each run ends, so a deadline holds for every worker.
    """
    context = mp.get_context("spawn")
    slots = context.Queue()
    for env in envs:
        slots.put(env)
    log.info("%d runs on %d workers (%s)", len(pending), len(envs), "; ".join(map(_env_text, envs)))
    todo = list(enumerate(pending, start=1))
    with ProcessPoolExecutor(max_workers=len(envs), mp_context=context, initializer=_init_worker,
                             initargs=(slots,)) as pool:
        running: dict = {}
        while todo or running:
            while todo and len(running) < len(envs):
                index, (run, directory) = todo.pop(0)
                if gate is not None and not gate(run, index, len(pending)):
                    yield run, "deferred"
                    continue
                running[pool.submit(_execute, run, params_file, str(output_root), str(directory), force)] = run
            if not running:
                break
            ended, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ended:
                run = running.pop(future)
                outcome = _outcome(future, run)
                if gate is not None:
                    gate.done(run)
                yield run, outcome


def _outcome(future, run: RunSpec) -> Outcome:
    """A future's outcome, or `failed` (logged) when the worker itself died."""
    try:
        return future.result()
    except Exception as exc:  # a crashed worker process, not a failing notebook (execute_run catches those)
        log.error("%s: worker failed: %s: %s", run.label, type(exc).__name__, exc)
        return "failed"


def _env_text(env: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in env.items())


# ---- submitit --------------------------------------------------------------------------------

def _submitit_job(run: RunSpec, params_file: str, output_root: str, directory: str, cwd: str,
                  env: dict[str, str], force: bool = False) -> Outcome:
    """What a submitit job runs: the project dir as cwd, the slot's env, then execute_run."""
    os.chdir(cwd)
    os.environ.update(env)
    return _execute(run, params_file, output_root, directory, force)


def make_executor(launcher: Launcher, folder: Path, slurm: SlurmSpec, run_minutes: int | None = None):
    """A submitit executor: Slurm through AutoExecutor, or submitit's LocalExecutor."""
    import submitit

    if launcher == "submitit-local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=run_minutes or slurm.time_min)
        return executor
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params = {"timeout_min": slurm.time_min, "gpus_per_node": slurm.gpus_per_node, "nodes": 1, "tasks_per_node": 1,
              "cpus_per_task": slurm.cpus_per_task, "mem_gb": slurm.mem_gb,
              "slurm_array_parallelism": slurm.array_parallelism}
    if slurm.partition:
        params["slurm_partition"] = slurm.partition
    if slurm.account:
        params["slurm_account"] = slurm.account
    executor.update_parameters(**params)
    return executor


def launch_submitit(pending: list[tuple[RunSpec, Path]], params_file: str, output_root: Path, launcher: Launcher,
                    slurm: SlurmSpec, log_root: Path, envs: list[dict[str, str]] | None = None,
                    force: bool = False) -> Iterator[tuple[RunSpec, Outcome]]:
    """Submit one job per run and wait for them; the job logs go under log_root/%j."""
    executor = make_executor(launcher, log_root / "%j", slurm)
    cwd, output_root = os.getcwd(), Path(output_root).resolve()
    envs = envs or [{}]
    jobs = []
    with executor.batch():
        for i, (run, directory) in enumerate(pending):
            jobs.append((run, executor.submit(_submitit_job, run, params_file, str(output_root),
                                               str(Path(directory).resolve()), cwd, envs[i % len(envs)], force)))
    log.info("submitted %d %s jobs (logs under %s)", len(jobs), launcher, log_root)
    for run, job in jobs:
        try:
            outcome: Outcome = job.result()
        except Exception as exc:  # the job itself died (pre-emption, time limit, node failure)
            log.error("%s: job %s failed: %s", run.label, job.job_id, str(exc).splitlines()[0] if str(exc) else exc)
            outcome = "failed"
        yield run, outcome
