"""Seeded rollouts of a policy + sampler on any env family: task score and policy latency in one pass.

Episodes run in batches of ``n_envs`` synchronous sub-environments: the simulator costs ~0.1 ms a step,
so the policy is the cost and one batched policy call per control step is what we want to time. Only
the policy call is timed; calls that planned a new chunk (the sampler ran) are kept apart from calls
that only popped the action queue. What differs between env families (making envs, observations,
scoring, per-task summaries) is asked of the family (:mod:`policy_accel.eval.families`); this loop
is the same for all of them and yields :class:`~policy_accel.eval.results.EpisodeResult` records.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from policy_accel.eval.execution import (
    JumpLog,
    check_execution_options,
    make_execution,
    measure_delay,
    smoothness_summary,
)
from policy_accel.eval.families import EnvFamily, Episode, ObsAdapter, RolloutSetup, family_for
from policy_accel.eval.machine import machine_info
from policy_accel.eval.results import EpisodeResult, Timing, episode_summary, success_rate, timing_summary
from policy_accel.policy.chunking import DEFAULT_GUIDANCE, DEFAULT_SPAN, check_policy_supports


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


def timed_call(policy: Any, obs: Any, timing: Timing) -> np.ndarray:
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


def _control_hz(family: EnvFamily, env_id: str, needed: bool) -> float | None:
    """The env's declared control rate; ``None`` for an env that declares none, unless ``needed``."""
    try:
        return family.control_hz(env_id)
    except Exception as exc:  # an env id or class without metadata["control_hz"] (a test's own variant)
        if needed:
            raise ValueError(
                f"delay=measured needs the env's control rate, but '{env_id}' declares none: {exc}"
            ) from None
        return None


def run_batch(
    policy: Any,
    family: EnvFamily,
    vec: Any,
    episodes: Sequence[Episode],
    adapt: ObsAdapter,
    timing: Timing,
    record: Sequence[bool],
    warm: bool,
    pbar: tqdm,
    execution: str = "sync",
    delay: int = 0,
    jumps: JumpLog | None = None,
    guidance: float = DEFAULT_GUIDANCE,
    span: int | None = DEFAULT_SPAN,
) -> tuple[list[EpisodeResult], list[list[np.ndarray]]]:
    """Run one episode per (task, seed) in parallel sub-envs until all have terminated or truncated;
    returns their records and, where ``record`` asks, their actions (for videos). ``execution`` and an
    integer ``delay`` (control steps) run the episodes under latency (:mod:`policy_accel.eval.execution`;
    ``sync``: the world waits, today's behaviour); ``jumps`` collects the commanded actions' jumps at chunk
    switches and within chunks; ``guidance`` is ``rtc``'s soft-guidance strength and ``span`` how many positions
    after the committed prefix it pulls (None: the whole overlap)."""
    n = len(episodes)
    obs = adapt(vec.reset(seed=[int(seed) for _, seed in episodes])[0])
    if warm:  # throwaway chunk: first-call allocations and thread start-up are not latency
        policy.reset()
        policy.select_action(obs)
    # One reseed per batch makes every batch (and so every seed list) reproducible.
    policy.reset(seed=int(episodes[0][1]))
    executor = make_execution(policy, execution, delay, guidance, span)
    previous: np.ndarray | None = None
    done = np.zeros(n, dtype=bool)
    max_reward = np.zeros(n)
    success = np.zeros(n, dtype=bool)
    length = np.zeros(n, dtype=int)
    maxima: dict[str, np.ndarray] = {}
    actions: list[list[np.ndarray]] = [[] for _ in range(n)]
    while not done.all():
        action = executor.act(obs, timing)
        raw_obs, reward, terminated, truncated, info = vec.step(action)
        obs = adapt(raw_obs)
        active = ~done
        if jumps is not None and previous is not None:
            jumps.record(previous, action, executor.switched, active)
        previous = action
        score = family.score(info, reward, n)
        max_reward[active] = np.maximum(max_reward[active], score.reward[active])
        for key, value in score.metrics.items():
            best = maxima.setdefault(key, np.zeros(n))
            best[active] = np.maximum(best[active], value[active])
        success[active] |= score.success[active]
        length[active] += 1
        for i in np.flatnonzero(active):
            if record[i]:
                actions[i].append(action[i].copy())
        finished = active & (terminated | truncated)
        done |= finished
        pbar.update(int(finished.sum()))
    results = [
        EpisodeResult(
            seed=int(seed),
            max_reward=float(max_reward[i]),
            success=bool(success[i]),
            length=int(length[i]),
            task=task,
            metrics={key: float(best[i]) for key, best in maxima.items()},
        )
        for i, (task, seed) in enumerate(episodes)
    ]
    return results, actions


def save_video(
    family: EnvFamily, setup: RolloutSetup, episode: EpisodeResult, actions: Sequence[np.ndarray], path: Path
) -> Path:
    """Replay an episode's exact actions in a rendering env (physics is deterministic) as a GIF."""
    from PIL import Image

    env = family.make_env(setup, episode.task, render_mode="rgb_array", render_size=setup.render_size)
    try:
        env.reset(seed=episode.seed)
        frames = [env.render()]
        replay_max = 0.0
        for action in actions:
            _, reward, *_ = env.step(action)
            replay_max = max(replay_max, float(reward))
            frames.append(env.render())
        fps = env.metadata.get("render_fps", 10)
    finally:
        env.close()
    if not math.isclose(replay_max, episode.max_reward, abs_tol=1e-9):
        warnings.warn(
            f"video replay of seed {episode.seed} diverged (max reward {replay_max:.4f} vs {episode.max_reward:.4f})",
            stacklevel=2,
        )
    images = [Image.fromarray(frame) for frame in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


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
    execution: str = "sync",
    delay: int | str = 0,
    guidance: float = DEFAULT_GUIDANCE,
    span: int | None = DEFAULT_SPAN,
) -> dict[str, Any]:
    """One episode per seed (per task and seed on multi-task families); returns a JSON-able dict of task
    scores, latencies and machine facts.

    ``execution`` (``sync``, ``blocking``, ``async``, ``blend``, ``rtc``) and ``delay`` (control steps, or
    ``"measured"``: the sampler's median chunk latency here, converted with the env's control rate) run the
    episodes under latency on a simulated clock (:mod:`policy_accel.eval.execution`); the result reports
    the delay used, the control rate and the action jumps at chunk switches (``smoothness``).

    ``sampler`` is a spec for ``policy.set_sampler`` (``None``: keep the policy's own); the policy's
    previous sampler is restored afterwards, as is its ``warm_start`` flag when ``warm_start`` (``None``:
    keep the policy's) overrides it for this evaluation. ``env_cfg`` is a hydra ``env`` config or a
    mapping (``id``, ``obs_type``, ``max_episode_steps``, ``render_size``, the family's own keys); its
    family (:func:`~policy_accel.eval.families.family_for`) makes the envs and scores them. Episodes run
    in batches of ``n_envs`` (default ``min(episodes, 10)``); the policy generator is reseeded with each
    batch's first seed, so the same seeds and ``n_envs`` give the same result.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("evaluate_policy needs at least one seed")
    family = family_for(env_cfg)
    setup = family.setup(policy.config, env_cfg, max_steps)
    episodes = family.episodes(setup, seeds)
    n_envs = min(len(episodes), 10) if n_envs is None else int(n_envs)
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    n_video = max(0, min(int(record_video_episodes), len(episodes)))
    if n_video and not family.supports_video:
        raise ValueError(f"videos are not supported for {family.title} yet; pass videos=0")
    if n_video and video_dir is None:
        raise ValueError("record_video_episodes > 0 needs a video_dir")

    execution, delay = check_execution_options(execution, delay)
    restore = apply_policy_options(policy, sampler, warm_start)
    try:  # the mode, the delay and the sampler checked against each other before any episode
        control_hz = _control_hz(family, setup.env_id, needed=delay == "measured")
        measured_ms = None
        if delay == "measured":
            delay, measured_ms = measure_delay(policy, control_hz)
        check_execution_options(execution, delay, policy.config)
        check_policy_supports(policy, execution)
    except BaseException:
        restore()
        raise
    jumps = JumpLog()
    warm_started = bool(policy.warm_start)
    name = str(policy.sampler.name)
    timing = Timing()
    results: list[EpisodeResult] = []
    recorded: list[list[np.ndarray]] = []
    warmed: set[int] = set()
    wall_start = time.perf_counter()
    try:
        with tqdm(total=len(episodes), desc=f"eval {name}", unit="ep", disable=not progress) as pbar:
            for start in range(0, len(episodes), n_envs):
                batch = episodes[start : start + n_envs]
                vec = family.make_vector_env(setup, batch)
                try:
                    adapt = family.obs_adapter(vec.single_observation_space, policy.config, setup)
                    record = [start + i < n_video for i in range(len(batch))]
                    batch_results, actions = run_batch(
                        policy,
                        family,
                        vec,
                        batch,
                        adapt,
                        timing,
                        record,
                        len(batch) not in warmed,
                        pbar,
                        execution=execution,
                        delay=int(delay),
                        jumps=jumps,
                        guidance=guidance,
                        span=span,
                    )
                finally:
                    vec.close()
                warmed.add(len(batch))
                results += batch_results
                recorded += [a for a, keep in zip(actions, record) if keep]
    finally:
        restore()
    wall_s = time.perf_counter() - wall_start

    videos = [
        str(
            save_video(
                family,
                setup,
                results[i],
                recorded[i],
                Path(video_dir) / f"episode{i:03d}_seed{results[i].seed}.gif",
            )
        )
        for i in range(n_video)
    ]
    result = {
        **episode_summary(results, name, sampler, warm_started),
        "env_id": setup.env_id,
        "obs_type": setup.obs_type,
        "max_steps": setup.max_steps,
        "seeds": seeds,
        "success_rate": success_rate(results),
        **timing_summary(timing),
        "batch_size": n_envs,
        "batch_sizes": sorted(warmed),
        "wall_time_s": wall_s,
        "videos": videos,
        "machine": machine_info(),
        "execution": execution,
        "delay_steps": int(delay),
        "delay_measured_ms": measured_ms,
        "control_hz": control_hz,
        "rtc_guidance": guidance if execution == "rtc" else None,
        "rtc_span": ("all" if span is None else span) if execution == "rtc" else None,
        "smoothness": smoothness_summary(jumps),
        # raw jumps (rounded), so results over seed batches pool exactly; the bench drops them once pooled
        "action_jumps": {"switch": [round(j, 6) for j in jumps.switch], "within": [round(j, 6) for j in jumps.within]},
    }
    return family.summarise(result)
