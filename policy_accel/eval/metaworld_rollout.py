"""Seeded Meta-World rollouts of a policy + sampler: success per task and policy latency in one pass.

The PushT harness (:mod:`policy_accel.eval.rollout`) scores coverage; Meta-World scores
``info["success"]`` per task, so it has its own loop here and reuses the PushT harness's timing
and statistics helpers. One seed means one episode *per task* (seed 100000 on ``push`` and on
``reach`` are two episodes), so ``n_seeds=50`` on MT10 is 500 episodes. Episodes end at their
first success (nothing after it changes the score) or at Meta-World's 500 steps. Episodes of
all tasks share the vector env (all observations are 49 numbers), so the policy sees one batch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from policy_accel.envs.metaworld.config import is_metaworld_obs, metaworld_tasks
from policy_accel.envs.metaworld.tasks import MAX_EPISODE_STEPS, MT10_TASKS, OBS_TYPES
from policy_accel.eval.report import machine_info
from policy_accel.eval.rollout import _timed_call, _Timing, apply_policy_options, episode_summary, timing_summary

METAWORLD_ENV_ID = "policy_accel/MetaWorld-v0"


def is_metaworld_env(env_cfg: Any) -> bool:
    """Whether a hydra ``env`` config is a Meta-World one (``env=metaworld`` / ``env=metaworld_mt10``)."""
    obs_type = env_cfg.get("obs_type") if hasattr(env_cfg, "get") else getattr(env_cfg, "obs_type", None)
    return is_metaworld_obs(obs_type)


def family_mismatch(policy_config: Any, env_cfg: Any, checkpoint: Any = "the checkpoint") -> str | None:
    """Why a checkpoint cannot run on this env (PushT policy on Meta-World or back, an unknown task), else None."""
    policy_mw, env_mw = is_metaworld_obs(policy_config.obs_type), is_metaworld_env(env_cfg)
    if env_mw:
        try:
            metaworld_tasks(env_cfg)
        except ValueError as exc:
            return f"env: {exc}"
    if policy_mw and not env_mw:
        return (
            f"'{checkpoint}' is a Meta-World policy (obs_type '{policy_config.obs_type}') but the env is PushT; "
            f"pass env=metaworld_mt10 (or env=metaworld env.task=TASK)"
        )
    env_obs = env_cfg.get("obs_type") if hasattr(env_cfg, "get") else getattr(env_cfg, "obs_type", None)
    if policy_mw and env_mw and env_obs != policy_config.obs_type:
        return (
            f"'{checkpoint}' observes '{policy_config.obs_type}' but the env gives '{env_obs}'; "
            f"pass env.obs_type={policy_config.obs_type}"
        )
    if env_mw and not policy_mw:
        return (
            f"'{checkpoint}' is a PushT policy (obs_type '{policy_config.obs_type}', {policy_config.obs_dim} numbers) but the env "
            f"is Meta-World; pass a Meta-World checkpoint, or env=pusht_{policy_config.obs_type}"
        )
    return None


def _make_envs(pairs: Sequence[tuple[str, int]], obs_type: str, max_steps: int) -> gym.vector.SyncVectorEnv:
    import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

    def maker(task: str) -> Any:
        return lambda: gym.make(
            METAWORLD_ENV_ID, task=task, obs_type=obs_type, terminate_on_success=True, max_episode_steps=max_steps
        )

    return gym.vector.SyncVectorEnv(
        [maker(task) for task, _ in pairs], autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
    )


def _run_batch(
    policy: Any,
    pairs: Sequence[tuple[str, int]],
    obs_type: str,
    max_steps: int,
    timing: _Timing,
    warm: bool,
    pbar: tqdm,
) -> list[dict[str, Any]]:
    """One episode per (task, seed) in parallel sub-envs until all have succeeded or timed out."""
    n = len(pairs)
    vec = _make_envs(pairs, obs_type, max_steps)
    try:
        space = vec.single_observation_space
        if not isinstance(space, gym.spaces.Box) or space.shape != (policy.config.obs_dim,):
            raise ValueError(
                f"policy expects observations of {policy.config.obs_dim} numbers; Meta-World "
                f"obs_type '{obs_type}' gives {space}"
            )
        obs, _ = vec.reset(seed=[int(seed) for _, seed in pairs])
        if warm:  # throwaway chunk: first-call allocations and thread start-up are not latency
            policy.reset()
            policy.select_action(obs)
        policy.reset(seed=int(pairs[0][1]))
        done = np.zeros(n, dtype=bool)
        success = np.zeros(n, dtype=bool)
        max_reward = np.zeros(n)
        length = np.zeros(n, dtype=int)
        while not done.all():
            action = _timed_call(policy, obs, timing)
            obs, reward, terminated, truncated, info = vec.step(action)
            active = ~done
            flags = np.asarray(info.get("success", np.zeros(n)), dtype=bool)
            success[active] |= flags[active]
            max_reward[active] = np.maximum(max_reward[active], np.asarray(reward, dtype=float)[active])
            length[active] += 1
            finished = active & (terminated | truncated)
            done |= finished
            pbar.update(int(finished.sum()))
    finally:
        vec.close()
    return [
        {
            "task": task,
            "seed": int(seed),
            "success": bool(success[i]),
            "length": int(length[i]),
            "max_reward": float(max_reward[i]),
        }
        for i, (task, seed) in enumerate(pairs)
    ]


def _ci95(p: float, n: int) -> float | None:
    """Normal-approximation CI95 half-width of a success rate (1.96 * sqrt(p(1-p)/n))."""
    return 1.96 * math.sqrt(p * (1.0 - p) / n) if n > 1 else None


def add_task_breakdown(result: dict[str, Any]) -> dict[str, Any]:
    """Add per-task success (with CI95) and their average to a result whose episodes carry ``task``.

    ``success_rate`` becomes the mean over tasks of the per-task rates (the MT10 score; equal to
    the pooled rate when every task has the same seeds) and ``success_ci95`` its CI95 (the tasks'
    variances averaged: sqrt(sum p(1-p)/n) / T).
    """
    per_task: dict[str, dict[str, Any]] = {}
    for task in [t for t in MT10_TASKS if any(e["task"] == t for e in result["episodes"])]:
        episodes = [e for e in result["episodes"] if e["task"] == task]
        p = float(np.mean([e["success"] for e in episodes]))
        per_task[task] = {
            "n_episodes": len(episodes),
            "success_rate": p,
            "ci95": _ci95(p, len(episodes)),
            "episode_length_mean": float(np.mean([e["length"] for e in episodes])),
        }
    rates = [v["success_rate"] for v in per_task.values()]
    variance = sum(v["success_rate"] * (1 - v["success_rate"]) / v["n_episodes"] for v in per_task.values())
    result["per_task"] = per_task
    result["tasks"] = list(per_task)
    result["success_rate"] = float(np.mean(rates))
    result["success_ci95"] = 1.96 * math.sqrt(variance) / len(rates) if result["n_episodes"] > 1 else None
    return result


def evaluate_metaworld(
    policy: Any,
    sampler: Any,
    env_cfg: Any,
    seeds: Sequence[int],
    n_envs: int | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    record_video_episodes: int = 0,
    video_dir: str | Path | None = None,
    warm_start: bool | None = None,
) -> dict[str, Any]:
    """Every task of ``env_cfg`` on every seed; the same JSON-able result as ``evaluate_policy``
    (so bench and reports pool and tabulate it alike) plus ``per_task`` success and ``success_ci95``.

    ``max_reward`` is Meta-World's own dense reward (0..10); the score is success. The policy's
    sampler and warm-start flag are restored afterwards; its generator is reseeded per batch
    of ``n_envs`` (task, seed) episodes, so the same seeds and ``n_envs`` give the same result.
    """
    if record_video_episodes:
        raise ValueError("videos are not supported for Meta-World yet (MuJoCo offscreen rendering); pass videos=0")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_metaworld needs at least one seed")
    tasks = metaworld_tasks(env_cfg)
    obs_type = str(env_cfg.get("obs_type") if hasattr(env_cfg, "get") else env_cfg.obs_type)
    if obs_type not in OBS_TYPES:
        raise ValueError(f"unknown Meta-World obs_type '{obs_type}'; choose one of {sorted(OBS_TYPES)}")
    if obs_type != policy.config.obs_type:
        raise ValueError(
            f"policy was trained on obs_type '{policy.config.obs_type}' but the env config gives '{obs_type}'"
        )
    if max_steps is None:  # the env config's limit, as for PushT
        max_steps = env_cfg.get("max_episode_steps") if hasattr(env_cfg, "get") else None
    max_steps = int(max_steps if max_steps is not None else MAX_EPISODE_STEPS)
    if not 1 <= max_steps <= MAX_EPISODE_STEPS:
        raise ValueError(f"Meta-World episodes last 1..{MAX_EPISODE_STEPS} steps, got max_steps={max_steps}")
    pairs = [(task, seed) for task in tasks for seed in seeds]
    n_envs = min(len(pairs), 10) if n_envs is None else int(n_envs)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")

    restore = apply_policy_options(policy, sampler, warm_start)
    warm_started = bool(policy.warm_start)
    name = str(getattr(policy.sampler, "name", sampler))
    timing, episodes, warmed = _Timing(), [], set()
    wall_start = time.perf_counter()
    try:
        with tqdm(total=len(pairs), desc=f"eval {name}", unit="ep", disable=not progress) as pbar:
            for start in range(0, len(pairs), n_envs):
                batch = pairs[start : start + n_envs]
                episodes += _run_batch(policy, batch, obs_type, max_steps, timing, len(batch) not in warmed, pbar)
                warmed.add(len(batch))
    finally:
        restore()
    wall_s = time.perf_counter() - wall_start

    result = {
        **episode_summary(episodes, name, sampler, warm_started),
        "env_id": METAWORLD_ENV_ID,
        "obs_type": obs_type,
        "max_steps": max_steps,
        "seeds": seeds,
        **timing_summary(timing),
        "batch_size": n_envs,
        "batch_sizes": sorted(warmed),
        "wall_time_s": wall_s,
        "videos": [],
        "machine": machine_info(),
    }
    return add_task_breakdown(result)


def _short(task: str) -> str:
    return task.replace("button-press-topdown", "button-topdown").replace("peg-insert-side", "peg-insert")


def metaworld_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Markdown: one row per sampler, the task-averaged success ± CI95, latency, NFE, rounds, then per task."""
    tasks = [t for t in MT10_TASKS if any(t in (r.get("per_task") or {}) for r in results)]
    head = [
        "sampler",
        "episodes",
        f"success ({len(tasks)}-task mean) ± CI95",
        "chunk p50 / p95 ms",
        "NFE/chunk",
        "rounds/chunk",
        "speed-up latency / rounds",
        *(_short(t) for t in tasks),
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        lat = r.get("latency_ms") or {}
        ci = r.get("success_ci95")
        speed = [r.get("speedup_vs_baseline"), r.get("rounds_ratio_vs_baseline")]
        per = r.get("per_task") or {}
        row = [
            str(r.get("label", r.get("sampler", "?"))),
            str(r.get("n_episodes", "?")),
            f"{r['success_rate']:.3f}" + (f" ± {ci:.3f}" if ci is not None else ""),
            " / ".join("n/a" if lat.get(k) is None else f"{lat[k]:.1f}" for k in ("p50", "p95")),
            "n/a" if r.get("nfe_per_chunk") is None else f"{r['nfe_per_chunk']:.1f}",
            "n/a" if r.get("rounds_per_chunk") is None else f"{r['rounds_per_chunk']:.1f}",
            " / ".join("n/a" if s is None else f"{s:.2f}x" for s in speed),
            *(f"{per[t]['success_rate']:.2f}" if t in per else "-" for t in tasks),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
