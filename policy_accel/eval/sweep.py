"""``eval`` and ``bench`` as sweeps of independent episodes on an executor (``executor=local|dask``).

Every episode is a unit (:mod:`policy_accel.eval.executor`), logged to ``output_dir/episodes.jsonl`` as it
finishes (:mod:`policy_accel.eval.episode_log`) so a run resumes; the report is built from the log, each
episode exactly once. Reward and success come from those episodes. Latency does not, for ``bench``: workers
that share machines distort timing, so its latency columns come from a dedicated measurement in this
process after the cluster is closed (the interleaved benchmark of :mod:`policy_accel.eval.bench` on
``latency_seeds`` seeds), and the report says where each figure came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from policy_accel.device import device_info
from policy_accel.eval.bench import _check_pairs, compare_pairs, prepare_samplers, run_benchmark
from policy_accel.eval.episode_log import LOG_NAME, EpisodeLog, file_digest
from policy_accel.eval.executor import (
    DaskExecutor,
    EpisodeJob,
    EpisodeUnit,
    LocalExecutor,
    episode_results,
    run_units,
    timing_of,
    units_for,
)
from policy_accel.eval.families import family_for
from policy_accel.eval.machine import machine_info
from policy_accel.eval.results import (
    add_speedups,
    episode_summary,
    percentiles_ms,
    reward_summary,
    smoothness_summary,
    success_rate,
    timing_summary,
)
from policy_accel.samplers import build_sampler

Executor = LocalExecutor | DaskExecutor
_BENCH_ONLY = ("label", "warm_start", "compile")  # bench entry keys that are policy options, not sampler options


def plain(cfg: Any) -> dict[str, Any]:
    """A config (DictConfig or mapping) as a plain dict."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def log_config(kind: str, jobs: Sequence[EpisodeJob]) -> dict[str, Any]:
    """The resume fingerprint's configuration: each job's identity and the bytes of every checkpoint it reads."""
    files = {job.checkpoint for job in jobs}
    files |= {str(job.sampler["checkpoint"]) for job in jobs if job.sampler and job.sampler.get("checkpoint")}
    return {
        "kind": kind,
        "jobs": {job.label: job.identity() for job in jobs},
        "checkpoint_sha256": {path: file_digest(path) for path in sorted(files) if Path(path).exists()},
    }


def _run(
    kind: str,
    jobs: Sequence[EpisodeJob],
    units: Sequence[EpisodeUnit],
    executor: Executor,
    output_dir: str | Path,
    resume: bool,
    progress: bool,
    on_record: Callable[[dict[str, Any]], None] | None,
) -> tuple[dict[Any, dict[str, Any]], dict[str, Any]]:
    """Run the units not yet in the log; the log's records and what ran where (the executor is closed after)."""
    path = Path(output_dir) / LOG_NAME
    with EpisodeLog(path, log_config(kind, jobs), resume) as log:
        if log.resumed:
            print(f"resume: {log.resumed} episodes already in {path}")
        with executor:
            run = run_units(units, executor, log, progress=progress, on_record=on_record)
            run.update(executor.describe(), log=str(path))
        return dict(log.records), run


def evaluate_episodes(
    policy: Any,
    job: EpisodeJob,
    seeds: Sequence[int],
    executor: Executor,
    output_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``eval`` on an executor: one unit per (task, seed); the same result dict as ``evaluate_policy`` (batch 1).

    ``policy`` is the client's copy (for the env set-up and the sampler's name); the episodes load their own
    from ``job.checkpoint``. Latency here is what the episodes measured where they ran (``executor.latency_source``
    says so); ``bench`` measures latency apart."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_episodes needs at least one seed")
    family = family_for(job.env)
    setup = family.setup(policy.config, dict(job.env), job.max_steps)
    episodes = family.episodes(setup, seeds)
    units = units_for(job, episodes)
    records, run = _run("eval", [job], units, executor, output_dir, resume, progress, on_record)
    mine = [records[u.key] for u in units]
    results = episode_results(mine)
    name = (
        build_sampler(
            dict(job.sampler),
            policy.config.noise_scheduler,
            default_guess_checkpoint=getattr(policy, "default_guess_checkpoint", None),
        ).name
        if job.sampler
        else policy.sampler.name
    )
    run["latency_source"] = (
        "this process, one episode at a time"
        if run["executor"] == "local"
        else "the Dask workers, which may share machines (indicative only; `policy-accel bench` measures it alone)"
    )
    result = {
        **episode_summary(results, name, job.sampler, job.warm_start),
        "env_id": setup.env_id,
        "obs_type": setup.obs_type,
        "max_steps": setup.max_steps,
        "seeds": seeds,
        "success_rate": success_rate(results),
        **timing_summary(timing_of(mine)),
        "batch_size": 1,
        "batch_sizes": [1],
        "wall_time_s": run["wall_time_s"],
        "videos": [],
        "machine": machine_info(),
        "execution": job.execution,
        "delay": job.delay,
        "rtc_guidance": job.guidance if job.execution == "rtc" else None,
        "rtc_span": job.span if job.execution == "rtc" else None,
        "smoothness": pooled_smoothness(mine),
        "executor": run,
    }
    return family.summarise(result)


def pooled_smoothness(records: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The action jumps of episode records pooled (``None`` when a record predates them: a resumed old log)."""
    if not records or not all("action_jumps" in r for r in records):
        return None
    switch = [j for r in records for j in r["action_jumps"]["switch"]]
    within = [j for r in records for j in r["action_jumps"]["within"]]
    return smoothness_summary(switch, within)


def _reward_from_episodes(
    latency_result: Mapping[str, Any], records: Sequence[Mapping[str, Any]], seeds: Sequence[int], family: Any
) -> dict[str, Any]:
    """A bench row: latency fields from the dedicated measurement, reward and success from the sweep's episodes."""
    results = episode_results(records)
    stats = reward_summary(results)
    out = {k: v for k, v in latency_result.items() if k not in ("per_task", "tasks", "success_ci95")}
    out.update(
        seeds=list(seeds),
        episodes=[e.to_dict() for e in results],
        success_rate=success_rate(results),
        **{k: stats[k] for k in ("n_episodes", "mean_max_reward", "std_max_reward", "ci95", "episode_length_mean")},
        smoothness=pooled_smoothness(records),
        latency_measurement_episodes=latency_result["n_episodes"],
        worker_latency_ms=percentiles_ms(ms for r in records for ms in r["timing"]["chunk_ms"]),
    )
    return family.summarise(out)


def benchmark_episodes(
    policy: Any,
    samplers: Sequence[Any],
    env_cfg: Any,
    seeds: Sequence[int],
    executor: Executor,
    output_dir: str | Path,
    checkpoint: str,
    max_steps: int,
    n_envs: int = 1,
    latency_seeds: int = 5,
    resume: bool = False,
    progress: bool = True,
    compare: Sequence[Sequence[str]] = (),
    compile: bool | str = False,
    device: str = "cpu",
    threads: int | None = None,
    execution: str | None = None,
    delay: int | None = None,
    guidance: float | None = None,
    span: int | str | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``bench`` on an executor: every sampler on every (task, seed) as units, then latency measured alone.

    Units go seed by seed with the samplers' order rotated (an interrupted run covers every sampler evenly).
    After the executor is closed (a LocalCluster's workers are gone), :func:`run_benchmark` times every
    sampler in this process on the first ``latency_seeds`` seeds with ``n_envs`` envs; its latency columns
    replace the workers'. Returns the report of :func:`run_benchmark` plus ``executor`` and per-row
    ``figure_sources``."""
    seeds = [int(s) for s in seeds]
    if not seeds or int(latency_seeds) < 1:
        raise ValueError("benchmark_episodes needs at least one seed and latency_seeds >= 1")
    _check_pairs(compare)
    entries, skipped = prepare_samplers(policy, samplers, default_compile=compile)
    for note in skipped:
        print(f"bench: skipping sampler {note['spec']}: {note['reason']}")
    if not entries:
        raise ValueError("no sampler left to benchmark")
    env = plain(env_cfg)
    jobs = [
        EpisodeJob(
            label=entry.label,
            checkpoint=str(checkpoint),
            sampler={k: v for k, v in entry.spec.items() if k not in _BENCH_ONLY},
            env=env,
            max_steps=int(max_steps),
            warm_start=entry.warm_start,
            compile=entry.compile,
            device=str(device),
            execution=execution,
            delay=delay,
            threads=threads,
            guidance=guidance,
            span=span,
        )
        for entry in entries
    ]
    family = family_for(env)
    episodes = family.episodes(family.setup(policy.config, env, int(max_steps)), seeds)
    units = [
        EpisodeUnit(job, task, seed)
        for i, (task, seed) in enumerate(episodes)
        for job in jobs[i % len(jobs) :] + jobs[: i % len(jobs)]
    ]
    records, run = _run("bench", jobs, units, executor, output_dir, resume, progress, on_record)

    latency_seed_list = seeds[: int(latency_seeds)]
    print(f"bench: latency of every sampler in this process alone, {len(latency_seed_list)} seeds, {n_envs} env(s)")
    timed = run_benchmark(
        policy,
        [entry.spec for entry in entries],
        env,
        latency_seed_list,
        n_envs=n_envs,
        max_steps=int(max_steps),
        progress=progress,
        checkpoint=checkpoint,
        compile=compile,
        **{k: v for k, v in (("execution", execution), ("delay", delay)) if v is not None},
        **({} if guidance is None else {"rtc_guidance": guidance}),
        **({} if span is None else {"rtc_span": None if span == "all" else int(span)}),
    )
    by_label = {r["label"]: r for r in timed["results"]}
    for row in timed["results"]:  # a mode/delay suffix (ddim-10/rtc/d4) still names its sampler entry
        by_label.setdefault(str(row["label"]).split("/")[0], row)
    where = run["address"] if run["executor"] == "dask" else "this process"
    results = []
    for job in jobs:
        mine = [records[(job.label, task, seed)] for task, seed in episodes]
        row = _reward_from_episodes(by_label[job.label], mine, seeds, family)
        row["figure_sources"] = {
            "reward_success": f"{len(mine)} episodes, executor={run['executor']} ({where})",
            "latency": f"this process alone after the sweep, {len(latency_seed_list)} seeds x {n_envs} env(s)",
        }
        results.append(row)
    add_speedups(results)
    comparisons, notes = compare_pairs(results, compare)
    for note in notes:
        print(f"bench: no comparison {note['pair']}: {note['reason']}")
    run["latency_source"] = (
        f"a dedicated measurement in this process after the {run['executor']} sweep had finished "
        f"(and a LocalCluster had been closed): {len(latency_seed_list)} seeds, {n_envs} env(s) per batch"
    )
    return {
        **timed,
        "results": results,
        "comparisons": comparisons,
        "skipped": skipped + notes,
        "seeds": seeds,
        "latency_seeds": latency_seed_list,
        "machine": machine_info(),
        "device": device_info(policy.device),
        "execution": execution,
        "delay": delay,
        "executor": run,
    }


def executor_markdown(run: Mapping[str, Any]) -> str:
    """The report's section on where the episodes ran and where each figure came from."""
    lines = [
        "",
        "## Where the figures come from",
        "",
        f"- reward and success: {run['episodes_total']} episodes on executor={run['executor']}"
        + (f" ({run.get('address')})" if run["executor"] == "dask" else " (this process)")
        + f"; {run['episodes_resumed']} resumed from {run.get('log')}, {run['episodes_run']} run now"
        + (f", {run['duplicates_dropped']} rescheduled duplicates dropped" if run.get("duplicates_dropped") else ""),
        f"- latency: {run.get('latency_source', 'n/a')}",
        f"- this session: {run['wall_time_s']:.1f} s wall"
        + (f", {run['episodes_per_s']:.2f} episodes/s" if run.get("episodes_per_s") else ""),
        "",
        "| worker | host | episodes | busy s | episodes/s while busy | episodes/min of wall |",
        "|---|---|---|---|---|---|",
    ]
    for name, w in sorted(run.get("workers", {}).items()):
        rate = w.get("episodes_per_s_busy")
        per_min = w.get("episodes_per_min_wall")
        lines.append(
            f"| {name} | {w['host']} | {w['episodes']} | {w['busy_s']:.1f} | "
            f"{'n/a' if rate is None else f'{rate:.2f}'} | {'n/a' if per_min is None else f'{per_min:.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def append_executor_section(md_path: str | Path, run: Mapping[str, Any]) -> None:
    """Add :func:`executor_markdown` to a written ``report.md``."""
    with Path(md_path).open("a", encoding="utf-8") as handle:
        handle.write(executor_markdown(run))
