"""Open-loop replay of recorded PushT demonstrations in our simulator.

If the simulator matches the one the humans used, restoring an episode's first
recorded state and feeding it the recorded actions must retrace the recorded
block trajectory. The block-position error along the way measures that fidelity;
it is the check that the physics port (constants, construction order, reset
convention) is faithful before any policy is trained or scored on it.

Dataset convention: ``action[i]`` was commanded at ``state[i]`` and led to
``state[i + 1]``; so an episode of L steps replays L - 1 actions.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from shapely.geometry import Polygon
from tqdm import tqdm

from policy_accel.data.replay_buffer import ReplayBuffer
from policy_accel.envs.pusht import PushTEnv
from policy_accel.envs.pusht.geometry import TEE_POLYS, coverage
from policy_accel.envs.pusht.pusht_env import SUCCESS_THRESHOLD

Order = Literal["angle-first", "position-first"]
ORDERS: tuple[str, ...] = ("angle-first", "position-first")
CHECKPOINTS: tuple[int, ...] = (10, 50)  # actions applied before comparing
WITHIN_PX: float = 5.0

# The block's centre of gravity in its body frame, computed as the env builds the
# body (mean of the two shapes' centroids, not area-weighted). pymunk rotates a
# body about this point, which is why the restore order matters.
_BLOCK_COG = np.mean([np.array(Polygon(p).centroid.coords[0]) for p in TEE_POLYS], axis=0)


def position_first_state(state: np.ndarray) -> np.ndarray:
    """The state a position-then-angle restore really produces (Diffusion Policy's legacy order).

    Setting the position first places the origin at (x, y) with angle 0; setting the
    angle then rotates the body about its centre of gravity c, moving the origin to
    (x, y) + c - R(angle) c. Restoring this state angle-first reproduces that pose
    exactly, so the env itself stays untouched.
    """
    state = np.asarray(state, dtype=np.float64).copy()
    angle = float(state[4])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    state[2:4] = state[2:4] + _BLOCK_COG - rotation @ _BLOCK_COG
    return state


def reward_of(block_pose: np.ndarray) -> float:
    """The env's reward for a block pose: goal coverage scaled so 95 % counts as 1."""
    return float(min(coverage(block_pose) / SUCCESS_THRESHOLD, 1.0))


@dataclass
class EpisodeReplay:
    """Per-episode result; errors are NaN when the episode is shorter than the checkpoint."""

    index: int
    length: int
    error_10: float
    error_50: float
    error_end: float
    replayed_max_reward: float
    recorded_max_reward: float


def replay_episode(
    env: PushTEnv, states: np.ndarray, actions: np.ndarray, order: Order = "angle-first", index: int = 0
) -> EpisodeReplay:
    """Replay one episode open loop and compare the block position with the record.

    Rewards are taken over the states the replay reaches (recorded states 1 .. L-1)
    on both sides, so the two maxima are comparable.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order '{order}'; choose one of {ORDERS}")
    states = np.asarray(states, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    length = len(states)
    first = states[0] if order == "angle-first" else position_first_state(states[0])
    env.reset(options={"state": first})
    errors = {0: float(np.linalg.norm(env.state[2:4] - states[0, 2:4]))}
    replayed_rewards = []
    for step in range(1, length):
        _, reward, _, _, info = env.step(actions[step - 1])
        replayed_rewards.append(reward)
        if step in CHECKPOINTS or step == length - 1:
            errors[step] = float(np.linalg.norm(info["state"][2:4] - states[step, 2:4]))
    recorded_rewards = [reward_of(s[2:5]) for s in states[1:]]
    return EpisodeReplay(
        index=index,
        length=length,
        error_10=errors.get(10, math.nan),
        error_50=errors.get(50, math.nan),
        error_end=errors[length - 1],
        replayed_max_reward=max(replayed_rewards, default=reward_of(env.state[2:5])),
        recorded_max_reward=max(recorded_rewards, default=reward_of(states[0, 2:5])),
    )


def _stats(values: list[float]) -> dict[str, float | int | None]:
    finite = np.asarray([v for v in values if not math.isnan(v)])
    if len(finite) == 0:
        return {"median": None, "p90": None, "n": 0}
    return {"median": float(np.median(finite)), "p90": float(np.percentile(finite, 90)), "n": len(finite)}


def replay_demos(
    path: str | Path, episodes: int | None = None, order: Order = "angle-first", progress: bool = True
) -> dict[str, Any]:
    """Replay the first ``episodes`` (default all) episodes of a zarr replay buffer.

    Returns a JSON-ready report: error statistics (pixels) after 10 and 50 actions and
    at the episode end, the fraction of episodes ending within 5 px of the record,
    mean replayed / recorded max reward, wall time, and the per-episode rows.
    Raises FileNotFoundError / ReplayBufferError for a missing or malformed file.
    """
    if order not in ORDERS:
        raise ValueError(f"unknown order '{order}'; choose one of {ORDERS}")
    if episodes is not None and episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    started = time.perf_counter()
    buffer = ReplayBuffer.from_zarr(path, keys=["state", "action"])
    n = buffer.n_episodes if episodes is None else min(episodes, buffer.n_episodes)
    env = PushTEnv(obs_type="state")
    rows = []
    for index in tqdm(range(n), desc=f"replay ({order})", unit="ep", disable=not progress):
        sl = buffer.episode_slice(index)
        rows.append(replay_episode(env, buffer["state"][sl], buffer["action"][sl], order, index))
    env.close()
    wall = time.perf_counter() - started
    return {
        "path": str(path),
        "order": order,
        "n_episodes": n,
        "n_steps": int(sum(r.length for r in rows)),
        "error_px": {
            "step_10": _stats([r.error_10 for r in rows]),
            "step_50": _stats([r.error_50 for r in rows]),
            "end": _stats([r.error_end for r in rows]),
        },
        "fraction_end_within_5px": float(np.mean([r.error_end <= WITHIN_PX for r in rows])) if rows else 0.0,
        "mean_replayed_max_reward": float(np.mean([r.replayed_max_reward for r in rows])) if rows else 0.0,
        "mean_recorded_max_reward": float(np.mean([r.recorded_max_reward for r in rows])) if rows else 0.0,
        "wall_time_s": wall,
        "episodes": [_json_row(r) for r in rows],
    }


def _json_row(row: EpisodeReplay) -> dict[str, Any]:
    # JSON has no NaN: an unreached checkpoint is null.
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(row).items()}


def format_report(report: dict[str, Any]) -> str:
    """Short human-readable table of a :func:`replay_demos` report."""

    def num(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    lines = [
        f"replayed {report['n_episodes']} episodes ({report['n_steps']} steps) of {report['path']}",
        f"block restored {report['order']}, wall time {report['wall_time_s']:.1f} s",
        "",
        f"{'block error (px)':<18}{'median':>10}{'p90':>10}{'episodes':>10}",
    ]
    for key, label in (("step_10", "after 10 steps"), ("step_50", "after 50 steps"), ("end", "at episode end")):
        s = report["error_px"][key]
        lines.append(f"{label:<18}{num(s['median'], '.4g'):>10}{num(s['p90'], '.4g'):>10}{s['n']:>10}")
    lines += [
        "",
        f"episodes ending within {WITHIN_PX:g} px: {100 * report['fraction_end_within_5px']:.1f} %",
        f"mean max reward: replayed {report['mean_replayed_max_reward']:.3f}, "
        f"recorded {report['mean_recorded_max_reward']:.3f}",
    ]
    return "\n".join(lines)
