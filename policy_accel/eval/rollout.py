"""Seeded PushT rollouts of a policy + sampler: task score and policy latency in one pass.

Episodes run in batches of ``n_envs`` synchronous sub-environments: the simulator costs
~0.1 ms a step, so the policy is the cost and one batched policy call per control step
is what we want to time. Only the policy call is timed; calls that planned a new chunk
(the sampler ran) are kept apart from calls that only popped the action queue.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from policy_accel.eval.obs_adapter import ObsAdapter, make_obs_adapter
from policy_accel.eval.obs_mapping import env_plan
from policy_accel.eval.report import machine_info
from policy_accel.samplers import SampleStats

SUCCESS_COVERAGE = 0.95  # PushT's success threshold (the env terminates above it)
DEFAULT_MAX_STEPS = 300


@dataclass
class _Timing:
    """Per batched ``select_action`` call: wall time, and the sampler's stats when it planned."""

    chunk_s: list[float] = field(default_factory=list)
    pop_s: list[float] = field(default_factory=list)
    stats: list[SampleStats] = field(default_factory=list)


def _cfg_value(cfg: Any, key: str, default: Any = None) -> Any:
    """Read ``key`` from a DictConfig, a mapping or an attribute object."""
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        value = cfg.get(key, default)
    else:
        value = getattr(cfg, key, default)
    return default if value is None else value


def _spec_json(spec: Any) -> Any:
    """A JSON-able form of a sampler spec (string, mapping incl. DictConfig, or object)."""
    if spec is None or isinstance(spec, (str, int, float, bool)):
        return spec
    if isinstance(spec, Mapping) or hasattr(spec, "items"):
        return {str(k): _spec_json(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)) or (hasattr(spec, "__iter__") and not hasattr(spec, "sample")):
        return [_spec_json(v) for v in spec]
    return getattr(spec, "name", repr(spec))


def _percentiles_ms(seconds: Sequence[float]) -> dict[str, Any]:
    if not seconds:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "n_chunks": 0}
    ms = np.asarray(seconds) * 1e3
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(ms.mean()), "n_chunks": len(ms)}


def _make_envs(env_id: str, obs_type: str, n: int, max_steps: int, **env_kwargs: Any) -> gym.vector.SyncVectorEnv:
    import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

    def make() -> gym.Env:
        return gym.make(env_id, obs_type=obs_type, max_episode_steps=max_steps, **env_kwargs)

    # NEXT_STEP autoreset (gymnasium's default, named explicitly): a finished sub-env is
    # reset on the following step; its results from then on are masked out below.
    return gym.vector.SyncVectorEnv([make] * n, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)


def apply_policy_options(policy: Any, sampler: Any, warm_start: bool | None) -> Callable[[], None]:
    """Set an evaluation's sampler and warm start on ``policy`` (``None``: keep the policy's own); returns
    the function that puts the previous ones back and resets the queues (call it in a ``finally``)."""
    previous_sampler, previous_warm_start = policy.sampler, policy.warm_start
    if sampler is not None:
        policy.set_sampler(sampler)
    if warm_start is not None:
        policy.warm_start = bool(warm_start)

    def restore() -> None:
        policy.set_sampler(previous_sampler)
        policy.warm_start = previous_warm_start
        policy.reset()

    return restore


def _timed_call(policy: Any, obs: np.ndarray, timing: _Timing) -> np.ndarray:
    """One batched policy call, timed; a new ``last_stats`` object means a chunk was planned."""
    before = policy.last_stats
    start = time.perf_counter()
    action = policy.select_action(obs)
    elapsed = time.perf_counter() - start
    if policy.last_stats is not before:
        timing.chunk_s.append(elapsed)
        timing.stats.append(policy.last_stats)
    else:
        timing.pop_s.append(elapsed)
    return np.asarray(action)


def _run_batch(
    policy: Any,
    vec: gym.vector.SyncVectorEnv,
    seeds: Sequence[int],
    timing: _Timing,
    record: Sequence[bool],
    warm: bool,
    pbar: tqdm,
    adapt: ObsAdapter | None = None,
) -> tuple[list[dict[str, Any]], list[list[np.ndarray]]]:
    """Run one episode per seed in parallel sub-envs until all have terminated or truncated.

    ``adapt`` turns the env's batched observation into the policy's (dict policies: key names, image layout)."""
    n = len(seeds)
    adapt = adapt or (lambda o: o)
    raw_obs, _ = vec.reset(seed=[int(s) for s in seeds])
    obs = adapt(raw_obs)
    if warm:  # throwaway chunk: first-call allocations and thread start-up are not latency
        policy.reset()
        policy.select_action(obs)
    # One reseed per batch makes every batch (and so every seed list) reproducible.
    policy.reset(seed=int(seeds[0]))
    done = np.zeros(n, dtype=bool)
    max_reward = np.zeros(n)
    max_coverage = np.zeros(n)
    success = np.zeros(n, dtype=bool)
    length = np.zeros(n, dtype=int)
    actions: list[list[np.ndarray]] = [[] for _ in range(n)]
    while not done.all():
        action = _timed_call(policy, obs, timing)
        raw_obs, reward, terminated, truncated, info = vec.step(action)
        obs = adapt(raw_obs)
        active = ~done
        coverage = np.asarray(info.get("coverage", np.zeros(n)), dtype=float)
        max_reward[active] = np.maximum(max_reward[active], np.asarray(reward)[active])
        max_coverage[active] = np.maximum(max_coverage[active], coverage[active])
        success[active] |= coverage[active] > SUCCESS_COVERAGE
        length[active] += 1
        for i in np.flatnonzero(active):
            if record[i]:
                actions[i].append(action[i].copy())
        finished = active & (terminated | truncated)
        done |= finished
        pbar.update(int(finished.sum()))
    episodes = [
        {
            "seed": int(s),
            "max_reward": float(max_reward[i]),
            "success": bool(success[i]),
            "length": int(length[i]),
            "max_coverage": float(max_coverage[i]),
        }
        for i, s in enumerate(seeds)
    ]
    return episodes, actions


def _save_video(
    env_id: str,
    obs_type: str,
    render_size: int,
    max_steps: int,
    episode: Mapping[str, Any],
    actions: Sequence[np.ndarray],
    path: Path,
) -> Path:
    """Replay an episode's exact actions in a rendering env (physics is deterministic) as a GIF."""
    from PIL import Image

    import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

    env = gym.make(
        env_id, obs_type=obs_type, max_episode_steps=max_steps, render_mode="rgb_array", render_size=render_size
    )
    try:
        env.reset(seed=episode["seed"])
        frames = [env.render()]
        replay_max = 0.0
        for action in actions:
            _, reward, *_ = env.step(action)
            replay_max = max(replay_max, float(reward))
            frames.append(env.render())
        fps = env.metadata.get("render_fps", 10)
    finally:
        env.close()
    if not math.isclose(replay_max, episode["max_reward"], abs_tol=1e-9):
        warnings.warn(
            f"video replay of seed {episode['seed']} diverged (max reward {replay_max:.4f} "
            f"vs {episode['max_reward']:.4f})",
            stacklevel=2,
        )
    images = [Image.fromarray(frame) for frame in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def _finite_mean(values: Sequence[float]) -> float | None:
    """Mean, or None when it is not finite (JSON has no NaN/inf)."""
    mean = float(np.mean(values))
    return mean if math.isfinite(mean) else None


def _summarise_stats(stats: Sequence[SampleStats]) -> dict[str, Any]:
    if not stats:
        return {
            "nfe_per_chunk": None,
            "rounds_per_chunk": None,
            "final_error_mean": None,
            "frac_hit_deadline": None,
            "frac_not_converged": None,
        }
    return {
        "nfe_per_chunk": float(np.mean([s.nfe for s in stats])),
        "rounds_per_chunk": float(np.mean([s.rounds for s in stats])),
        "final_error_mean": _finite_mean([s.final_error for s in stats]),
        "frac_hit_deadline": float(np.mean([bool(s.hit_deadline) for s in stats])),
        "frac_not_converged": float(np.mean([not s.converged for s in stats])),
    }


def evaluate_policy(
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
    """One episode per seed; returns a JSON-able dict of task scores, latencies and machine facts.

    ``sampler`` is a spec for ``policy.set_sampler`` (``None``: keep the policy's own); the
    policy's previous sampler is restored afterwards, as is its ``warm_start`` flag when
    ``warm_start`` (``None``: keep the policy's) overrides it for this evaluation. ``env_cfg`` needs ``id`` and
    ``obs_type`` (``max_episode_steps``, ``render_size`` optional). Episodes run in
    batches of ``n_envs`` (default ``min(len(seeds), 10)``); the policy generator is
    reseeded with each batch's first seed, so the same seeds and ``n_envs`` give the same
    result.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_policy needs at least one seed")
    n_envs = min(len(seeds), 10) if n_envs is None else int(n_envs)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    env_id = _cfg_value(env_cfg, "id", "policy_accel/PushT-v0")
    obs_type = _cfg_value(env_cfg, "obs_type", "keypoints")
    plan = env_plan(policy.config, env_cfg)  # LeRobot feature names: the PushT view the policy's features need
    if plan is not None:
        obs_type = plan.obs_type
    max_steps = int(max_steps if max_steps is not None else _cfg_value(env_cfg, "max_episode_steps", DEFAULT_MAX_STEPS))
    render_size = int(_cfg_value(env_cfg, "render_size", 96))
    n_video = max(0, min(int(record_video_episodes), len(seeds)))
    if n_video and video_dir is None:
        raise ValueError("record_video_episodes > 0 needs a video_dir")

    restore = apply_policy_options(policy, sampler, warm_start)
    warm_started = bool(policy.warm_start)
    name = str(getattr(policy.sampler, "name", sampler))
    timing = _Timing()
    episodes: list[dict[str, Any]] = []
    recorded: list[list[np.ndarray]] = []
    warmed: set[int] = set()
    wall_start = time.perf_counter()
    try:
        with tqdm(total=len(seeds), desc=f"eval {name}", unit="ep", disable=not progress) as pbar:
            for start in range(0, len(seeds), n_envs):
                batch = seeds[start : start + n_envs]
                vec = _make_envs(env_id, obs_type, len(batch), max_steps, **(plan.env_kwargs if plan else {}))
                try:
                    adapt = (
                        plan.adapt
                        if plan is not None
                        else make_obs_adapter(
                            vec.single_observation_space, policy.config, obs_type, _cfg_value(env_cfg, "obs_keys")
                        )
                    )
                    record = [start + i < n_video for i in range(len(batch))]
                    batch_episodes, actions = _run_batch(
                        policy, vec, batch, timing, record, warm=len(batch) not in warmed, pbar=pbar, adapt=adapt
                    )
                finally:
                    vec.close()
                warmed.add(len(batch))
                episodes += batch_episodes
                recorded += [a for a, keep in zip(actions, record) if keep]
    finally:
        restore()
    wall_s = time.perf_counter() - wall_start

    videos = [
        str(
            _save_video(
                env_id,
                obs_type,
                render_size,
                max_steps,
                episodes[i],
                recorded[i],
                Path(video_dir) / f"episode{i:03d}_seed{episodes[i]['seed']}.gif",
            )
        )
        for i in range(n_video)
    ]
    return {
        **episode_summary(episodes, name, sampler, warm_started),
        "env_id": env_id,
        "obs_type": obs_type,
        "max_steps": max_steps,
        "seeds": seeds,
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        **timing_summary(timing),
        "batch_size": n_envs,
        "batch_sizes": sorted(warmed),
        "wall_time_s": wall_s,
        "videos": videos,
        "machine": machine_info(),
    }


def episode_summary(
    episodes: Sequence[Mapping[str, Any]], name: str, sampler: Any, warm_started: bool
) -> dict[str, Any]:
    """Reward statistics of an evaluation's episodes, with the sampler that produced them."""
    rewards = np.array([e["max_reward"] for e in episodes])
    n = len(rewards)
    std = float(rewards.std(ddof=1)) if n > 1 else None
    return {
        "sampler": name,
        "sampler_spec": _spec_json(sampler if sampler is not None else name),
        "warm_start": warm_started,
        "n_episodes": n,
        "mean_max_reward": float(rewards.mean()),
        "std_max_reward": std,
        # Normal approximation to the 95% CI of the mean (1.96 * sample std / sqrt(n)); None for n = 1.
        "ci95": 1.96 * std / math.sqrt(n) if std is not None else None,
        "episode_length_mean": float(np.mean([e["length"] for e in episodes])),
        "episodes": list(episodes),
    }


def timing_summary(timing: _Timing) -> dict[str, Any]:
    """Chunk and per-action latency of an evaluation, and what the samplers spent."""
    n_calls = len(timing.chunk_s) + len(timing.pop_s)
    policy_s = float(sum(timing.chunk_s) + sum(timing.pop_s))
    return {
        "latency_ms": _percentiles_ms(timing.chunk_s),
        # Raw per-chunk latencies, so results over several calls can be pooled exactly (bench).
        "chunk_latencies_ms": [1e3 * s for s in timing.chunk_s],
        "pop_latency_ms": {k: v for k, v in _percentiles_ms(timing.pop_s).items() if k in ("p50", "mean")},
        # Policy time per batched control step: what one env waits per action, on average.
        "per_action_ms": 1e3 * policy_s / n_calls if n_calls else None,
        **_summarise_stats(timing.stats),
        "n_policy_calls": n_calls,
        "policy_time_s": policy_s,
    }
