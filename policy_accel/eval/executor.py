"""Run many episodes as independent units, in this process (``local``) or on a Dask cluster (``dask``).

The unit of work is one episode: (checkpoint, sampler spec, env, task, seed, execution mode, delay). Its
result depends on nothing else: the episode runs alone (a batch of one) and the policy's noise generator is
reseeded with the episode's seed, so every episode has its own noise stream and local, 1 worker and N
workers, in any order, give the same per-episode rewards (the same as the batched loop with ``n_envs=1``).
A worker loads each (checkpoint, sampler spec) once and keeps it (:func:`run_unit`'s per-thread cache).

Dask is the distributed engine (``pip install "policy-accel[dask]"``): a ``LocalCluster`` on 127.0.0.1
without a dashboard, or any running scheduler (``dask scheduler``, dask-jobqueue, dask-kubernetes); it
reschedules the episodes of a worker that dies, and places episodes on GPUs through worker resources.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from tqdm.auto import tqdm

from policy_accel.eval.results import EpisodeResult, Timing

DASK_INSTALL = 'pip install "policy-accel[dask]"'


class ExecutorError(RuntimeError):
    """The executor cannot run (no scheduler at the address, the cluster went away)."""


class EpisodeFailed(RuntimeError):
    """An episode raised on a worker; the message holds the worker and its traceback."""


# ---------------------------------------------------------------- units
@dataclass(frozen=True)
class EpisodeJob:
    """What every episode of one sampler entry shares; with (task, seed) it fixes an episode's result.

    ``execution`` and ``delay`` (asynchronous execution / real-time chunking) are passed to the rollout
    as keyword options when set; ``None`` runs today's synchronous loop. ``threads`` is torch's thread
    count in the worker (None: leave it; Dask's workers start with 1).
    """

    label: str
    checkpoint: str
    sampler: Mapping[str, Any] | None  # a build_sampler spec; None: the checkpoint's own
    env: Mapping[str, Any]
    max_steps: int
    warm_start: bool = False
    compile: bool | str = False
    device: str = "cpu"
    execution: str | None = None
    delay: int | None = None
    threads: int | None = None
    guidance: float | None = None  # execution=rtc: the pull of the overlap toward the previous chunk
    span: int | str | None = None  # execution=rtc: positions guided after the prefix ("all": the whole overlap)

    def identity(self) -> dict[str, Any]:
        """The fields an episode's result depends on (the resume fingerprint; ``threads`` is not one)."""
        out = asdict(self)
        out.pop("threads")
        return json.loads(json.dumps(out, default=str))

    def cache_key(self) -> str:
        """Per-worker cache key: checkpoint, sampler spec and how the policy is placed."""
        keys = ("checkpoint", "sampler", "warm_start", "compile", "device", "threads")
        return json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True, default=str)


@dataclass(frozen=True)
class EpisodeUnit:
    """One episode to run: a job and an initial state."""

    job: EpisodeJob
    task: str | None
    seed: int

    @property
    def key(self) -> tuple[str, str | None, int]:
        return self.job.label, self.task, self.seed

    def describe(self) -> str:
        task = "" if self.task is None else f"task {self.task}, "
        return f"{self.job.label} ({task}seed {self.seed})"


# ---------------------------------------------------------------- the worker side
@dataclass
class _Loaded:
    policy: Any
    setups: dict[str, Any] = field(default_factory=dict)
    episodes: int = 0


_CACHE = threading.local()  # one policy per thread: a policy's queues belong to one episode at a time


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass


def _where() -> dict[str, Any]:
    """This process's worker address (Dask) or host, and pid: where an episode ran."""
    address = None
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        pass
    return {"worker": address or f"local:{socket.gethostname()}:{os.getpid()}", "host": socket.gethostname()}


def _load(job: EpisodeJob) -> tuple[_Loaded, bool]:
    """The cached policy of ``job`` in this thread (loaded on first use); and whether it was cached."""
    cache: dict[str, _Loaded] = _CACHE.__dict__.setdefault("entries", {})
    key = job.cache_key()
    if key in cache:
        return cache[key], True
    import torch

    from policy_accel.device import resolve_device
    from policy_accel.policy.loading import load_policy

    if job.threads is not None:
        torch.set_num_threads(int(job.threads))
    if not os.path.exists(job.checkpoint):
        raise FileNotFoundError(
            f"checkpoint '{job.checkpoint}' not found on {socket.gethostname()}: Dask workers read checkpoints by "
            "path, so they need the same files (a shared filesystem, or the same install for shipped checkpoints)"
        )
    policy = load_policy(job.checkpoint, sampler=None if job.sampler is None else dict(job.sampler))
    policy.to(resolve_device(job.device))
    if job.compile:
        policy.compile(job.compile)
    policy.warm_start = bool(job.warm_start)
    cache[key] = _Loaded(policy)
    return cache[key], False


def rollout_options(job: EpisodeJob) -> dict[str, Any]:
    """The rollout's keyword options of a job: execution mode, delay and RTC guidance, only when set."""
    options = (("execution", job.execution), ("delay", job.delay), ("guidance", job.guidance))
    out = {k: v for k, v in options if v is not None}
    if job.span is not None:
        out["span"] = None if job.span == "all" else int(job.span)
    return out


def run_episode(policy: Any, unit: EpisodeUnit, warm: bool, setups: dict[str, Any] | None = None) -> dict[str, Any]:
    """One episode of ``unit`` with ``policy``, alone and reseeded by its seed: its record (JSON-able)."""
    from policy_accel.eval.execution import JumpLog
    from policy_accel.eval.families import family_for
    from policy_accel.eval.rollout import run_batch

    job = unit.job
    family = family_for(job.env)
    setups = {} if setups is None else setups
    setup_key = json.dumps([job.env, job.max_steps], sort_keys=True, default=str)
    if setup_key not in setups:
        setups[setup_key] = family.setup(policy.config, dict(job.env), job.max_steps)
    setup = setups[setup_key]
    episode = (unit.task, int(unit.seed))
    timing, jumps = Timing(), JumpLog()
    start = time.perf_counter()
    vec = family.make_vector_env(setup, [episode])
    try:
        adapt = family.obs_adapter(vec.single_observation_space, policy.config, setup)
        results, _ = run_batch(
            policy, family, vec, [episode], adapt, timing, [False], warm, _NoBar(), jumps=jumps, **rollout_options(job)
        )
    finally:
        vec.close()
        policy.reset()
    return {
        "label": job.label,
        "episode": results[0].to_dict(),
        "timing": {
            "chunk_ms": [1e3 * s for s in timing.chunk_s],
            "pop_ms": [round(1e3 * s, 5) for s in timing.pop_s],
            "stats": [
                [int(s.nfe), int(s.rounds), _finite(s.final_error), bool(s.converged), bool(s.hit_deadline)]
                for s in timing.stats
            ],
        },
        # the commanded actions' jumps (env units), pooled over episodes into the report's smoothness
        "action_jumps": {"switch": [round(j, 6) for j in jumps.switch], "within": [round(j, 6) for j in jumps.within]},
        "wall_s": time.perf_counter() - start,
    }


def _finite(value: Any) -> float | None:
    """JSON has no NaN/inf: a non-finite float becomes None (read back as NaN)."""
    value = float(value)
    return value if math.isfinite(value) else None


def run_unit(unit: EpisodeUnit) -> dict[str, Any]:
    """The task a worker runs: load (or reuse) the job's policy, run the episode, say where it ran.

    Any failure is re-raised as :class:`EpisodeFailed` carrying the worker's address and traceback, so the
    client stops with the real cause."""
    try:
        loaded, cached = _load(unit.job)
        record = run_episode(loaded.policy, unit, warm=not cached, setups=loaded.setups)
        loaded.episodes += 1
    except Exception as exc:
        where = _where()
        raise EpisodeFailed(
            f"episode {unit.describe()} failed on worker {where['worker']} (host {where['host']}, pid {os.getpid()}): "
            f"{type(exc).__name__}: {exc}\n--- worker traceback ---\n{traceback.format_exc()}"
        ) from None
    return {**record, **_where(), "cache_hit": cached, "finished_at": time.time()}


# ---------------------------------------------------------------- executors
@dataclass(frozen=True)
class DaskOptions:
    """``dask.*`` options: a scheduler address (None: a LocalCluster here), its size, per-task resources."""

    address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    resources: Mapping[str, float] | None = None
    connect_timeout_s: float = 10.0


class LocalExecutor:
    """The episodes one after another in this process: the same units and records as Dask, resumable."""

    name = "local"

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def workers_alive(self) -> int:
        return 1

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "workers_alive": 1, "where": f"this process ({socket.gethostname()})"}

    def run(self, units: Sequence[EpisodeUnit]) -> Iterator[dict[str, Any]]:
        for unit in units:
            yield run_unit(unit)


def require_dask() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            f"executor=dask needs Dask distributed, which is not installed: {DASK_INSTALL} (or [all])",
            name="distributed",
        ) from exc
    return distributed


class DaskExecutor:
    """Episodes as Dask tasks. ``address=None`` starts a ``LocalCluster`` bound to 127.0.0.1 without a
    dashboard (closed on exit); otherwise connects to a running scheduler within ``connect_timeout_s``."""

    name = "dask"

    def __init__(self, options: DaskOptions) -> None:
        self.options = options
        self.cluster: Any = None
        self.client: Any = None

    def __enter__(self) -> DaskExecutor:
        distributed = require_dask()
        opts = self.options
        timeout = f"{float(opts.connect_timeout_s)}s"
        try:
            if opts.address is None:
                self.cluster = distributed.LocalCluster(
                    n_workers=int(opts.n_workers),
                    threads_per_worker=int(opts.threads_per_worker),
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,  # no dashboard; its bare HTTP routes (health) on a free 127.0.0.1 port:
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    resources=dict(opts.resources) if opts.resources else None,
                    silence_logs=logging.ERROR,
                )
                self.client = distributed.Client(self.cluster, timeout=timeout)
            else:
                import dask

                with dask.config.set({"distributed.comm.timeouts.connect": timeout}):
                    self.client = distributed.Client(opts.address, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            self.__exit__()
            where = opts.address or "a LocalCluster on 127.0.0.1"
            raise ExecutorError(
                f"cannot reach the Dask scheduler at {where} within {opts.connect_timeout_s:g} s: {exc}. "
                "Start one with `dask scheduler` (and workers with `dask worker tcp://HOST:8786 --nthreads 1`), "
                "or leave dask.address=null for a cluster on this machine"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.client is not None:
            self.client.close(timeout=10)
            self.client = None
        if self.cluster is not None:
            self.cluster.close(timeout=20)
            self.cluster = None

    def workers_alive(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def describe(self) -> dict[str, Any]:
        opts = self.options
        return {
            "executor": "dask",
            "address": opts.address or f"LocalCluster on 127.0.0.1 ({opts.n_workers} workers)",
            "workers_alive": self.workers_alive(),
            "threads_per_worker": opts.threads_per_worker if opts.address is None else None,
            "resources_per_episode": dict(opts.resources or {}),
        }

    def run(self, units: Sequence[EpisodeUnit]) -> Iterator[dict[str, Any]]:
        """Submit every unit, yield records as they finish; the first failure cancels the rest and raises."""
        distributed = require_dask()
        client = self.client
        tag = uuid.uuid4().hex[:8]
        resources = dict(self.options.resources) if self.options.resources else None
        futures = [
            client.submit(
                run_unit, unit, key=f"episode-{tag}-{i}", pure=False, resources=resources, retries=0, priority=-i
            )
            for i, unit in enumerate(units)
        ]
        by_key = {f.key: u for f, u in zip(futures, units)}
        try:
            for future in distributed.as_completed(futures):
                if future.status == "error":
                    exc = future.exception()
                    if isinstance(exc, EpisodeFailed):
                        raise EpisodeFailed(str(exc)) from None
                    tb = "".join(traceback.format_tb(future.traceback())) if future.traceback() else ""
                    raise EpisodeFailed(
                        f"episode {by_key[future.key].describe()} failed: {type(exc).__name__}: {exc}\n{tb}"
                    ) from None
                if future.status == "cancelled":
                    raise ExecutorError(
                        "the Dask scheduler went away (or cancelled the episodes); finished episodes are in "
                        "episodes.jsonl: rerun with resume=true"
                    )
                yield future.result()
                future.release()
        finally:
            client.cancel([f for f in futures if not f.done()])


def make_executor(name: str, dask: DaskOptions | None = None) -> LocalExecutor | DaskExecutor:
    """``local`` or ``dask`` (with its options)."""
    if name == "local":
        return LocalExecutor()
    if name == "dask":
        require_dask()  # fail before any work when the extra is missing
        return DaskExecutor(dask or DaskOptions())
    raise ValueError(f"executor must be local or dask, got {name!r}")


# ---------------------------------------------------------------- the run loop
def run_units(
    units: Sequence[EpisodeUnit],
    executor: LocalExecutor | DaskExecutor,
    log: Any,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the units the log does not hold yet, appending each record as it arrives; one progress bar.

    Returns what ran where: the session's per-worker episode counts and busy time, and the wall time."""
    todo = [u for u in units if u.key not in log.records]
    total = len(units)
    done_before = total - len(todo)
    per_worker: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    duplicates = 0
    with tqdm(
        total=total, initial=done_before, desc=f"episodes ({executor.name})", unit="ep", disable=not progress
    ) as pbar:
        for record in executor.run(todo) if todo else ():
            if not log.append(record):
                duplicates += 1  # a rescheduled episode that had already finished elsewhere: kept once
                continue
            worker = per_worker.setdefault(record["worker"], {"host": record["host"], "episodes": 0, "busy_s": 0.0})
            worker["episodes"] += 1
            worker["busy_s"] += float(record["wall_s"])
            pbar.update(1)
            if executor.name == "dask":
                pbar.set_postfix_str(f"workers alive {executor.workers_alive()}")
            if on_record is not None:
                on_record(record)
    wall = time.perf_counter() - start
    for worker in per_worker.values():
        worker["episodes_per_s_busy"] = worker["episodes"] / worker["busy_s"] if worker["busy_s"] > 0 else None
        worker["episodes_per_min_wall"] = 60.0 * worker["episodes"] / wall if wall > 0 else None
    return {
        "episodes_total": total,
        "episodes_resumed": done_before,
        "episodes_run": len(todo),
        "duplicates_dropped": duplicates,
        "wall_time_s": wall,
        "episodes_per_s": len(todo) / wall if wall > 0 and todo else None,
        "workers": per_worker,
    }


def units_for(job: EpisodeJob, episodes: Sequence[tuple[str | None, int]]) -> list[EpisodeUnit]:
    """One unit per (task, seed) of a job."""
    return [EpisodeUnit(job, task, int(seed)) for task, seed in episodes]


def timing_of(records: Sequence[Mapping[str, Any]]) -> Timing:
    """The pooled raw timings of records (for the latency fields of a report)."""
    from policy_accel.samplers import SampleStats

    timing = Timing()
    for record in records:
        t = record["timing"]
        timing.chunk_s += [ms / 1e3 for ms in t["chunk_ms"]]
        timing.pop_s += [ms / 1e3 for ms in t["pop_ms"]]
        timing.stats += [
            SampleStats(nfe, rounds, math.nan if err is None else err, conv, hit)
            for nfe, rounds, err, conv, hit in t["stats"]
        ]
    return timing


def episode_results(records: Sequence[Mapping[str, Any]]) -> list[EpisodeResult]:
    return [EpisodeResult.from_dict(r["episode"]) for r in records]
