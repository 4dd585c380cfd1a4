"""One Meta-World v3 task as a seeded gymnasium env.

Meta-World 3.x ignores ``reset(seed=...)`` and draws each episode's task variation (object
and goal positions, its ``rand_vec``) from numpy's *global* RNG unless told otherwise. Here the
simulator draws it from its own generator, seeded from the episode seed, so one seed is one
initial state on any machine and nothing touches ``np.random``. A ``reset()`` without a seed
continues that generator (gymnasium's convention; vector-env autoreset relies on it).

The goal is observable (Meta-World's MT benchmarks' setting): without it ``reach`` has nothing
to reach for.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from policy_accel.envs.metaworld.tasks import (
    ACTION_DIM,
    MAX_EPISODE_STEPS,
    MT10_TASKS,
    N_TASKS,
    OBS_TYPES,
    STATE_DIM,
    normalise_task,
)


def make_simulator(task: str, render_mode: str | None = None, camera_name: str = "corner") -> Any:
    """The raw Meta-World env of ``task`` with the goal observable and seeded task variations."""
    try:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    except ImportError as exc:
        raise ImportError(
            f'Meta-World needs the metaworld package ({exc.name} is missing): pip install "policy-accel[metaworld]"',
            name=exc.name,
        ) from exc

    env = ALL_V3_ENVIRONMENTS[f"{normalise_task(task)}-v3"](render_mode=render_mode, camera_name=camera_name)
    env._partially_observable = False
    env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden; recompute
    env._set_task_called = True  # we set the variation ourselves instead of via set_task
    env._freeze_rand_vec = False  # draw a fresh variation at each reset ...
    env.seeded_rand_vec = True  # ... from env.np_random, not numpy's global RNG
    return env


class MetaWorldEnv(gym.Env):
    """A Meta-World MT10 task: 39-number state (+ one-hot task id), 4 actions in [-1, 1].

    ``obs_type``: ``metaworld_state_task`` (49 numbers: the state then the one-hot of the task's
    index in :data:`MT10_TASKS`) or ``metaworld_state`` (the 39 numbers). ``info["success"]``
    is Meta-World's success flag (bool). ``terminate_on_success`` ends the episode at the first
    success (evaluation needs no more); by default episodes run to the time limit like Meta-World.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80, "control_hz": 80}  # Meta-World's own control rate

    def __init__(
        self,
        task: str = "reach",
        obs_type: str = "metaworld_state_task",
        render_mode: str | None = None,
        terminate_on_success: bool = False,
        camera_name: str = "corner",
    ) -> None:
        self.task = normalise_task(task)
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown Meta-World obs_type '{obs_type}'; choose one of {sorted(OBS_TYPES)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.obs_type, self.render_mode = obs_type, render_mode
        self.terminate_on_success = bool(terminate_on_success)
        self.task_id = MT10_TASKS.index(self.task)
        self._one_hot = np.zeros(N_TASKS, dtype=np.float32)
        self._one_hot[self.task_id] = 1.0
        self._sim = make_simulator(self.task, render_mode=render_mode, camera_name=camera_name)
        self._sim.max_path_length = MAX_EPISODE_STEPS
        self._seeded = False
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(OBS_TYPES[obs_type],), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(ACTION_DIM,), dtype=np.float32)
        self.state: np.ndarray | None = None  # the last raw 39-number state (float64), for experts
        self.variation: np.ndarray | None = None  # this episode's task variation (object/goal positions)

    def _obs(self, state: np.ndarray) -> np.ndarray:
        self.state = np.array(state, dtype=np.float64)
        flat = self.state.astype(np.float32)
        return np.concatenate([flat, self._one_hot]) if self.obs_type == "metaworld_state_task" else flat

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._sim.seed(int(seed))
            self._seeded = True
        elif not self._seeded:  # first reset without a seed: draw one from gymnasium's own RNG
            self._sim.seed(int(self.np_random.integers(2**31 - 1)))
            self._seeded = True
        state, _ = self._sim.reset()
        # Not in info: its size differs between tasks, and a vector env of mixed tasks stacks info.
        self.variation = np.array(self._sim._last_rand_vec, dtype=np.float64)
        return self._obs(state), {"success": False, "task": self.task, "task_id": self.task_id}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"Meta-World actions have {ACTION_DIM} numbers, got shape {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"Meta-World action contains NaN or inf: {action}")
        state, reward, _, truncated, info = self._sim.step(np.clip(action, -1.0, 1.0))
        success = bool(info.get("success", 0.0) > 0.5)
        out = {k: v for k, v in info.items() if k != "success"}
        out.update(success=success, task=self.task, task_id=self.task_id)
        terminated = success and self.terminate_on_success
        return self._obs(state), float(reward), terminated, bool(truncated), out

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        return self._sim.render()

    def close(self) -> None:
        self._sim.close()


__all__ = ["MT10_TASKS", "MetaWorldEnv", "STATE_DIM", "make_simulator"]
