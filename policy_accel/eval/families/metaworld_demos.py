"""Record Meta-World's scripted experts into Diffusion Policy's zarr layout.

Layout (one buffer for all recorded tasks; :class:`~policy_accel.data.replay_buffer.ReplayBuffer`
reads it)::

    data/state            (T, 39) float32  Meta-World's state observation at each step
    data/task_id          (T,)    int64    index of the episode's task in MT10_TASKS (per step)
    data/action           (T, 4)  float32  the expert's clean action at that state (the training label)
    data/executed_action  (T, 4)  float32  what was sent to the simulator: clean + Gaussian noise, clipped
    meta/episode_ends     (E,)    int64
    meta/episode_seeds    (E,)    int64    the env seed of each kept episode (replays it exactly)
    meta/episode_task_ids (E,)    int64

Why noise, and why the clean label: executing noisy actions pushes the arm off the expert's
narrow path, so the data contains the states a learned policy drifts into, each labelled with
what the expert does from there (a recovery). Labelling with the noisy action instead would
teach the policy to reproduce the noise. Episodes stop ``settle_steps`` after the first success
(a few steps of "stay at the goal", not hundreds of idle steps that would dominate the data);
episodes that never succeed within Meta-World's 500 steps are dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zarr
from tqdm.auto import tqdm

from policy_accel.data.replay_buffer import ReplayBuffer
from policy_accel.envs.metaworld.tasks import MAX_EPISODE_STEPS, MT10_TASKS, normalise_task

TEST_SEED_START = 100000  # evaluation seeds start here (as for PushT); demos must stay below


@dataclass
class TaskStats:
    """The expert's record on one task: attempts, successes and the kept demos' lengths."""

    task: str
    attempts: int = 0
    successes: int = 0
    success_rate: float = 0.0
    clean_attempts: int = 0
    clean_successes: int = 0
    clean_success_rate: float | None = None
    first_success_step_mean: float | None = None
    first_success_step_max: int | None = None
    kept_episodes: int = 0
    kept_steps: int = 0
    failed_seeds: list[int] = field(default_factory=list)


def expert_for(task: str) -> Any:
    """Meta-World's scripted policy for an MT10 task."""
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[f"{normalise_task(task)}-v3"]()


def run_expert_episode(
    env: Any,
    expert: Any,
    seed: int,
    noise_std: float,
    noise_rng: np.random.Generator,
    settle_steps: int,
    max_steps: int = MAX_EPISODE_STEPS,
) -> dict[str, Any]:
    """One expert episode on ``env`` (a :class:`MetaWorldEnv`) from ``seed``.

    Returns the per-step arrays, whether it succeeded and the step of the first success. The
    expert gets a copy of the float64 state: some Meta-World experts write into their input.
    """
    env.reset(seed=int(seed))
    states, clean, executed = [], [], []
    first_success: int | None = None
    for step in range(max_steps):
        state = env.state.copy()
        action = np.clip(np.asarray(expert.get_action(state.copy()), dtype=np.float64), -1.0, 1.0)
        noisy = action + noise_rng.normal(0.0, noise_std, size=action.shape) if noise_std > 0 else action
        noisy = np.clip(noisy, -1.0, 1.0)
        states.append(state.astype(np.float32))
        clean.append(action.astype(np.float32))
        executed.append(noisy.astype(np.float32))
        _, _, terminated, truncated, info = env.step(noisy.astype(np.float32))
        if info["success"] and first_success is None:
            first_success = step + 1
        if first_success is not None and step + 1 >= first_success + settle_steps:
            break
        if terminated or truncated:
            break
    return {
        "state": np.stack(states),
        "action": np.stack(clean),
        "executed_action": np.stack(executed),
        "success": first_success is not None,
        "first_success": first_success,
    }


def check_training_seeds(seed_start: int, n_seeds: int) -> None:
    """Demos come from training seeds only: refuse any range that reaches the test seeds."""
    if seed_start < 0:
        raise ValueError(f"seed_start must be >= 0, got {seed_start}")
    if seed_start + n_seeds > TEST_SEED_START:
        raise ValueError(
            f"demo seeds {seed_start}..{seed_start + n_seeds - 1} reach the test seeds "
            f"(from {TEST_SEED_START}); lower seed_start or the episode counts"
        )


def record_demos(
    tasks: Sequence[str],
    episodes_per_task: int,
    output: str | Path,
    seed_start: int = 0,
    max_attempts_per_task: int | None = None,
    action_noise: float = 0.1,
    settle_steps: int = 10,
    clean_episodes: int = 0,
    noise_seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Record ``episodes_per_task`` successful noisy expert episodes per task into ``output`` (zarr).

    Task ``t`` (in the given order) tries seeds ``seed_start, seed_start + 1, ...`` up to
    ``max_attempts_per_task`` (default 2x the episodes) and keeps the successes. Also runs
    ``clean_episodes`` noise-free episodes per task on the same seeds to report the expert's own
    success rate. Writes ``<output>.stats.json`` beside the zarr and returns the same summary.
    """
    from policy_accel.envs.metaworld.metaworld_env import MetaWorldEnv

    names = [normalise_task(t) for t in tasks]
    if not names:
        raise ValueError("record_demos needs at least one task")
    if len(set(names)) != len(names):
        raise ValueError(f"tasks listed twice: {list(tasks)}")
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if not (np.isfinite(action_noise) and action_noise >= 0):
        raise ValueError(f"action_noise must be a finite number >= 0, got {action_noise}")
    attempts_cap = max_attempts_per_task if max_attempts_per_task is not None else 2 * episodes_per_task
    if attempts_cap < episodes_per_task:
        raise ValueError(f"max_attempts_per_task ({attempts_cap}) < episodes_per_task ({episodes_per_task})")
    check_training_seeds(seed_start, max(attempts_cap, clean_episodes))

    buffer = ReplayBuffer()
    episode_seeds: list[int] = []
    episode_tasks: list[int] = []
    stats: dict[str, TaskStats] = {}
    total = len(names) * (attempts_cap + clean_episodes)
    with tqdm(total=total, desc="record-demos", unit="ep", disable=not progress) as bar:
        for name in names:
            task_id = MT10_TASKS.index(name)
            env, expert, s = MetaWorldEnv(task=name), expert_for(name), TaskStats(task=name)
            noise_rng = np.random.default_rng([noise_seed, task_id])
            firsts: list[int] = []
            try:
                for k in range(clean_episodes):
                    episode = run_expert_episode(env, expert, seed_start + k, 0.0, noise_rng, settle_steps)
                    s.clean_attempts += 1
                    s.clean_successes += int(episode["success"])
                    bar.update(1)
                for k in range(attempts_cap):
                    if s.kept_episodes == episodes_per_task:
                        break
                    seed = seed_start + k
                    episode = run_expert_episode(env, expert, seed, action_noise, noise_rng, settle_steps)
                    s.attempts += 1
                    bar.update(1)
                    if not episode["success"]:
                        s.failed_seeds.append(seed)
                        continue
                    s.successes += 1
                    firsts.append(int(episode["first_success"]))
                    n = len(episode["state"])
                    buffer.add_episode(
                        {
                            "state": episode["state"],
                            "action": episode["action"],
                            "executed_action": episode["executed_action"],
                            "task_id": np.full(n, task_id, dtype=np.int64),
                        }
                    )
                    episode_seeds.append(seed)
                    episode_tasks.append(task_id)
                    s.kept_episodes += 1
                    s.kept_steps += n
            finally:
                env.close()
            bar.update(attempts_cap - s.attempts)
            s.success_rate = s.successes / s.attempts
            s.clean_success_rate = s.clean_successes / s.clean_attempts if s.clean_attempts else None
            s.first_success_step_mean = float(np.mean(firsts)) if firsts else None
            s.first_success_step_max = int(max(firsts)) if firsts else None
            stats[name] = s
    if buffer.n_episodes == 0:
        raise RuntimeError("the experts succeeded on no episode: nothing to write")

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    buffer.save_zarr(output)
    root = zarr.open_group(str(output), mode="a")
    for key, values in (("episode_seeds", episode_seeds), ("episode_task_ids", episode_tasks)):
        array = root.create_array(f"meta/{key}", shape=(len(values),), dtype=np.int64)
        array[:] = np.asarray(values, dtype=np.int64)
    settings = {
        "tasks": names,
        "task_list": list(MT10_TASKS),
        "episodes_per_task": episodes_per_task,
        "seed_start": seed_start,
        "max_attempts_per_task": attempts_cap,
        "action_noise": action_noise,
        "settle_steps": settle_steps,
        "clean_episodes": clean_episodes,
        "noise_seed": noise_seed,
        "label": "clean expert action (data/action); executed noisy action in data/executed_action",
    }
    root.attrs.update({"policy_accel": {"source": "metaworld scripted experts", **settings}})
    summary = {
        "zarr": str(output),
        "n_episodes": buffer.n_episodes,
        "n_steps": buffer.n_steps,
        "settings": settings,
        "tasks": {name: asdict(s) for name, s in stats.items()},
    }
    stats_path(output).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def stats_path(zarr_path: str | Path) -> Path:
    """``runs/demos/mt10.zarr`` -> ``runs/demos/mt10.stats.json``."""
    path = Path(zarr_path)
    return path.with_name(path.name.removesuffix(".zarr") + ".stats.json")


def format_stats(summary: dict[str, Any]) -> str:
    """The per-task expert table printed by ``policy-accel record-demos``."""
    lines = [
        "| task | expert success (noisy) | clean expert success | kept demos | steps | first success mean / max |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary["tasks"].items():
        clean = "-" if s["clean_success_rate"] is None else f"{s['clean_success_rate']:.2f} ({s['clean_attempts']})"
        first = (
            "-"
            if s["first_success_step_mean"] is None
            else f"{s['first_success_step_mean']:.0f} / {s['first_success_step_max']}"
        )
        lines.append(
            f"| {name} | {s['success_rate']:.2f} ({s['successes']}/{s['attempts']}) | {clean} | "
            f"{s['kept_episodes']} | {s['kept_steps']} | {first} |"
        )
    lines.append(f"\n{summary['n_episodes']} episodes, {summary['n_steps']} steps -> {summary['zarr']}")
    return "\n".join(lines)
