"""The ``executor=``, ``resume=`` and ``dask.*`` options of ``eval`` and ``bench``, checked before any work.

``executor=null`` keeps the in-process batched loop (every recorded figure's meaning); ``local`` and ``dask``
run per-episode units (:mod:`policy_accel.eval.executor`) with ``output_dir/episodes.jsonl`` for resuming.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from policy_accel.cli.options import Check, boolean, positive_int, positive_number


def executor_option(value: Any) -> str | None:
    return None if value in (None, "local", "dask") else "null (the batched in-process loop), local or dask"


def address_option(value: Any) -> str | None:
    ok = value is None or (isinstance(value, str) and "://" in value and value.rsplit(":", 1)[-1].isdigit())
    return None if ok else "null (a LocalCluster on 127.0.0.1) or a scheduler address tcp://HOST:PORT"


def resources_option(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping) or OmegaConf.is_dict(value):
        ok = all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in value.values()
        )
        if ok:
            return None
    return "null or a mapping of worker resources to positive amounts per episode, e.g. {GPU: 1}"


EXECUTOR_CHECKS: dict[str, Check] = {
    "executor": executor_option,
    "resume": boolean,
    "dask.address": address_option,
    "dask.n_workers": positive_int,
    "dask.threads_per_worker": positive_int,
    "dask.resources": resources_option,
    "dask.connect_timeout_s": positive_number,
}


def check_executor_use(cfg: DictConfig, command: str) -> None:
    """Options that only make sense with an executor, or that an executor cannot do (videos)."""
    if cfg.executor is None and cfg.resume:
        raise SystemExit(
            f"policy-accel {command}: resume=true needs executor=local or executor=dask "
            "(the batched loop keeps no episodes.jsonl)"
        )
    if cfg.executor is not None and int(OmegaConf.select(cfg, "videos", default=0) or 0) > 0:
        raise SystemExit(f"policy-accel {command}: videos need the batched loop: pass executor=null or videos=0")
    if cfg.executor == "dask":  # a missing extra fails now, naming the install, not after loading the policy
        from policy_accel.eval.executor import require_dask

        require_dask()


def make_executor_from(cfg: DictConfig) -> Any:
    """The executor the options name (``ImportError`` naming the extra when Dask is missing)."""
    from policy_accel.eval.executor import DaskOptions, make_executor

    dask = cfg.dask
    resources = None if dask.resources is None else OmegaConf.to_container(dask.resources, resolve=True)
    options = DaskOptions(
        address=dask.address,
        n_workers=int(dask.n_workers),
        threads_per_worker=int(dask.threads_per_worker),
        resources=resources or None,
        connect_timeout_s=float(dask.connect_timeout_s),
    )
    return make_executor(str(cfg.executor), options)


def rollout_mode(command: str, policy: Any, env_cfg: Any, execution: Any, delay: Any) -> tuple[str | None, int | None]:
    """One execution mode and an integer delay for every episode unit. ``delay=measured`` is measured once,
    here on the client (workers measuring their own would make an episode's result depend on its machine);
    lists (a bench sweep over modes or delays) are one command per value under an executor."""
    if isinstance(execution, (list, tuple)) or isinstance(delay, (list, tuple)):
        raise SystemExit(
            f"policy-accel {command}: executor=local|dask runs one execution mode and one delay per command; "
            f"got execution={execution!r}, delay={delay!r}: run one command per value (or executor=null)"
        )
    if delay == "measured":
        from policy_accel.eval.execution import measure_delay
        from policy_accel.eval.families import family_for

        family = family_for(env_cfg)
        delay, latency_ms = measure_delay(policy, family.control_hz(OmegaConf.select(env_cfg, "id", default=None)))
        print(f"{command}: delay=measured: {latency_ms:.1f} ms median chunk latency here -> {delay} control steps")
    return (None if execution is None else str(execution)), (None if delay is None else int(delay))


def run_with_executor(command: str, output_dir: Path, work: Any) -> Any:
    """Run ``work()`` and turn the executor's failures into one clear message (no partial report)."""
    from policy_accel.eval.episode_log import LOG_NAME, ResumeError
    from policy_accel.eval.executor import EpisodeFailed, ExecutorError

    log = output_dir / LOG_NAME
    try:
        return work()
    except (ExecutorError, ResumeError) as exc:
        raise SystemExit(f"policy-accel {command}: {exc}") from None
    except EpisodeFailed as exc:
        raise SystemExit(
            f"policy-accel {command}: stopped, no report written: {exc}\n"
            f"Finished episodes are kept in {log}; after fixing the cause, rerun with resume=true"
        ) from None
    except KeyboardInterrupt:
        raise SystemExit(
            f"policy-accel {command}: interrupted; finished episodes are kept in {log}: "
            "rerun the same command with resume=true to run only the missing ones"
        ) from None


def to_plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def executor_evaluate(cfg: DictConfig, checkpoint: Path, spec: Mapping[str, Any] | None, output_dir: Path) -> Any:
    """A drop-in for ``evaluate_policy`` (same keywords) that runs the episodes on ``cfg.executor``.

    ``execution`` / ``delay`` given as keywords (or in the config) travel with every episode unit."""

    def evaluate(
        policy: Any,
        sampler: Any = None,
        env_cfg: Any = None,
        seeds: Any = (),
        n_envs: int | None = None,
        progress: bool = True,
        max_steps: int | None = None,
        record_video_episodes: int = 0,
        video_dir: Any = None,
        warm_start: bool | None = None,
        execution: str | None = None,
        delay: int | str | None = None,
        guidance: float | None = None,
        span: int | None = None,
        **other: Any,
    ) -> dict[str, Any]:
        from policy_accel.eval.executor import EpisodeJob
        from policy_accel.eval.sweep import evaluate_episodes

        if unsupported := sorted(k for k, v in other.items() if v is not None):
            raise SystemExit(f"policy-accel eval: executor={cfg.executor} does not support {unsupported} yet")
        execution, delay = rollout_mode("eval", policy, env_cfg, execution, delay)
        job = EpisodeJob(
            label=str(policy.sampler.name),
            checkpoint=str(checkpoint),
            sampler=None if spec is None else dict(spec),
            env=to_plain(env_cfg),
            max_steps=int(max_steps if max_steps is not None else cfg.max_steps),
            warm_start=bool(warm_start),
            compile=cfg.compile,
            device=str(cfg.device),
            execution=execution,
            delay=delay,
            threads=None if cfg.threads is None else int(cfg.threads),
            guidance=None if guidance is None else float(guidance),
            span=None if execution != "rtc" else ("all" if span is None else int(span)),
        )
        executor = make_executor_from(cfg)
        return run_with_executor(
            "eval",
            output_dir,
            lambda: evaluate_episodes(policy, job, seeds, executor, output_dir, bool(cfg.resume), progress),
        )

    return evaluate


def executor_benchmark(cfg: DictConfig, output_dir: Path) -> Any:
    """A drop-in for ``run_benchmark`` (same keywords): reward and success from episodes on ``cfg.executor``,
    latency from a dedicated measurement in this process on ``cfg.latency_seeds`` seeds afterwards."""

    def benchmark(
        policy: Any,
        samplers: Any,
        env_cfg: Any,
        seeds: Any,
        n_envs: int = 1,
        max_steps: int = 300,
        progress: bool = True,
        checkpoint: str | None = None,
        compare: Any = (),
        compile: bool | str = False,
        execution: Any = None,
        delay: Any = None,
        rtc_guidance: float | None = None,
        rtc_span: int | None = None,
        **other: Any,
    ) -> dict[str, Any]:
        from policy_accel.eval.sweep import benchmark_episodes

        if unsupported := sorted(k for k, v in other.items() if v is not None):
            raise SystemExit(f"policy-accel bench: executor={cfg.executor} does not support {unsupported} yet")
        if isinstance(delay, str) and delay == "measured":
            raise SystemExit(
                "policy-accel bench: delay=measured differs per sampler; under executor=local|dask give an integer delay"
            )
        execution, delay = rollout_mode("bench", policy, env_cfg, execution, delay)
        executor = make_executor_from(cfg)
        return run_with_executor(
            "bench",
            output_dir,
            lambda: benchmark_episodes(
                policy,
                samplers,
                env_cfg,
                seeds,
                executor,
                output_dir,
                checkpoint=str(checkpoint),
                max_steps=int(max_steps),
                n_envs=int(n_envs),
                latency_seeds=int(cfg.latency_seeds),
                resume=bool(cfg.resume),
                progress=progress,
                compare=compare,
                compile=compile,
                device=str(cfg.device),
                threads=None if cfg.threads is None else int(cfg.threads),
                execution=execution,
                delay=delay,
                guidance=None if execution != "rtc" or rtc_guidance is None else float(rtc_guidance),
                span=None if execution != "rtc" else ("all" if rtc_span is None else int(rtc_span)),
            ),
        )

    return benchmark
