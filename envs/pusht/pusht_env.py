"""PushT gymnasium environment (pymunk 7 port of Diffusion Policy's PushT).

A kinematic disc agent, driven by a PD controller toward the commanded 2-D
target, pushes a T-shaped block onto a fixed goal pose. Physics constants,
construction order and reset conventions follow the original so that the
human demonstrations (pusht_cchi_v7_replay.zarr) replay faithfully.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import pymunk
from gymnasium import spaces

from policy_accel.envs.pusht import geometry as geo
from policy_accel.envs.pusht.render import render_frame

OBS_TYPES: tuple[str, ...] = ("state", "keypoints", "pixels", "pixels_agent_pos")

SIM_HZ: int = 100
CONTROL_HZ: int = 10
SUBSTEPS: int = SIM_HZ // CONTROL_HZ
DT: float = 1.0 / SIM_HZ
K_P: float = 100.0
K_V: float = 20.0
SUCCESS_THRESHOLD: float = 0.95


class _World:
    """One fresh pymunk space holding walls, agent and block.

    Rebuilt on every reset so no velocity, contact cache or solver warm-start
    leaks between episodes (the original rebuilt its space too).
    """

    def __init__(self) -> None:
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        # Damping 0 zeroes the block's velocity each substep: the block only
        # moves while it is being pushed (quasi-static pushing).
        self.space.damping = 0.0
        self.space.add(*(pymunk.Segment(self.space.static_body, a, b, geo.WALL_RADIUS) for a, b in geo.WALLS))

        self.agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.agent.position = geo.AGENT_START
        self.space.add(self.agent, pymunk.Circle(self.agent, geo.AGENT_RADIUS))

        bar, stem = geo.TEE_POLYS
        # The original adds the bar's moment twice (never the stem's); kept so
        # the rotational dynamics match the recorded demonstrations.
        moment = 2 * pymunk.moment_for_poly(geo.BLOCK_MASS, bar)
        self.block = pymunk.Body(geo.BLOCK_MASS, moment)
        shapes = [pymunk.Poly(self.block, bar), pymunk.Poly(self.block, stem)]
        self.block.center_of_gravity = (shapes[0].center_of_gravity + shapes[1].center_of_gravity) / 2
        self.block.position = geo.BLOCK_START[:2]
        self.block.angle = geo.BLOCK_START[2]
        self.space.add(self.block, *shapes)

        self.contact_points = 0
        self.space.on_collision(0, 0, post_solve=self._count_contacts)

    def _count_contacts(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data: Any) -> None:
        self.contact_points += len(arbiter.contact_point_set.points)

    def set_state(self, state: np.ndarray, angle_first: bool) -> None:
        """Place agent and block, then run one substep so the pose takes effect.

        pymunk rotates a body about its centre of gravity, which for the T is
        not its origin. Setting the angle first and the position second puts
        the origin exactly at (x, y); the reverse ("legacy") order shifts it.
        """
        x, y, angle = (float(v) for v in state[2:5])
        if angle_first:
            self.block.angle = angle
            self.block.position = (x, y)
        else:
            self.block.position = (x, y)
            self.block.angle = angle
        self.agent.position = (float(state[0]), float(state[1]))
        self.space.step(DT)

    def step(self, target: np.ndarray) -> None:
        """One control step: SUBSTEPS of PD control on the agent's velocity."""
        tx, ty = float(target[0]), float(target[1])
        self.contact_points = 0
        for _ in range(SUBSTEPS):
            px, py = self.agent.position
            vx, vy = self.agent.velocity
            ax = K_P * (tx - px) + K_V * (0.0 - vx)
            ay = K_P * (ty - py) + K_V * (0.0 - vy)
            self.agent.velocity = (vx + ax * DT, vy + ay * DT)
            self.space.step(DT)

    def block_pose(self) -> np.ndarray:
        """(x, y, angle) of the block's body origin; angle not wrapped."""
        x, y = self.block.position
        return np.array([x, y, self.block.angle], dtype=np.float64)

    def agent_pos(self) -> np.ndarray:
        return np.array(self.agent.position, dtype=np.float64)


def _as_vector(value: Any, size: int, name: str) -> np.ndarray:
    """Validate a finite float vector of a given length (ValueError otherwise)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric with shape ({size},), got {value!r}") from exc
    if arr.shape != (size,):
        raise ValueError(f"{name} must have shape ({size},), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


class PushTEnv(gym.Env):
    """Push a T block onto the goal pose (256, 256, pi/4) with a disc agent.

    Args:
        obs_type: "state" (agent xy, block xy, block angle mod 2pi; (5,) float64),
            "keypoints" (9 block keypoints then agent xy; (20,) float64),
            "pixels" ((obs_size, obs_size, 3) uint8) or "pixels_agent_pos"
            (Dict with "pixels" and "agent_pos").
        render_mode: None or "rgb_array".
        render_size: side of the frames returned by `render()`.
        obs_size: side of the pixel observations.
        legacy_reset: for seeded random resets, set the block's position before
            its angle like Diffusion Policy's evaluation does (default), so the
            same seeds give the same initial scenes as the original benchmark.
            False sets the angle first, placing the block origin at the drawn
            position. Restoring a given state is always angle-first.

    Actions are absolute agent targets (x, y) in pixels, not clipped (like the
    original); non-finite or wrongly shaped actions raise ValueError.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ, "control_hz": CONTROL_HZ}

    def __init__(
        self,
        obs_type: str = "state",
        render_mode: str | None = None,
        render_size: int = 96,
        obs_size: int = 96,
        legacy_reset: bool = True,
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown obs_type {obs_type!r}; valid: {', '.join(OBS_TYPES)}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: None, 'rgb_array'")
        self.obs_type = obs_type
        self.render_mode = render_mode
        self.render_size = int(render_size)
        self.obs_size = int(obs_size)
        self.legacy_reset = legacy_reset
        self.goal_pose = geo.GOAL_POSE.copy()

        w = float(geo.WINDOW_SIZE)
        self.action_space = spaces.Box(low=0.0, high=w, shape=(2,), dtype=np.float64)
        agent_pos_space = spaces.Box(low=0.0, high=w, shape=(2,), dtype=np.float64)
        pixels_space = spaces.Box(0, 255, (self.obs_size, self.obs_size, 3), dtype=np.uint8)
        if obs_type == "state":
            high = np.array([w, w, w, w, 2 * math.pi])
            self.observation_space = spaces.Box(np.zeros(5), high, dtype=np.float64)
        elif obs_type == "keypoints":
            # Keypoints lie on/near the block, which the walls keep inside the window.
            self.observation_space = spaces.Box(low=0.0, high=w, shape=(20,), dtype=np.float64)
        elif obs_type == "pixels":
            self.observation_space = pixels_space
        else:
            self.observation_space = spaces.Dict({"pixels": pixels_space, "agent_pos": agent_pos_space})

        self._world = _World()

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Start an episode from a seeded random scene or from `options["state"]`.

        A given seed drives numpy's legacy RandomState exactly like the
        original benchmark; without one, a seed is drawn from `self.np_random`
        so that resets after a seeded reset are reproducible.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        state = options.pop("state", None)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; valid: 'state'")
        if state is not None:
            self._load(_as_vector(state, 5, "state"), angle_first=True)
        else:
            if seed is None:
                seed = int(self.np_random.integers(0, 2**32))
            self._load(sample_initial_state(seed), angle_first=not self.legacy_reset)
        return self._get_obs(), self._get_info()

    def restore_state(self, state: Any) -> Any:
        """Rebuild the scene at an exact recorded state and return the observation.

        `state` is (agent x, agent y, block x, block y, block angle), e.g. a row
        of the dataset's `data/state`. The block angle is set before its
        position so the block lands exactly at the recorded pose. Prefer
        `reset(options={"state": state})` when wrapped (it also resets
        TimeLimit's step counter).
        """
        self._load(_as_vector(state, 5, "state"), angle_first=True)
        return self._get_obs()

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        target = _as_vector(action, 2, "action")
        self._world.step(target)
        info = self._get_info()
        reward = float(np.clip(info["coverage"] / SUCCESS_THRESHOLD, 0.0, 1.0))
        return self._get_obs(), reward, bool(info["is_success"]), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' at init.")
            return None
        return self._frame(self.render_size)

    def close(self) -> None:
        """Nothing to release (no window, no files); safe to call repeatedly."""

    @property
    def state(self) -> np.ndarray:
        """Full 5-vector (agent xy, block xy, block angle not wrapped)."""
        return np.concatenate([self._world.agent_pos(), self._world.block_pose()])

    # ------------------------------------------------------------- helpers
    def _load(self, state: np.ndarray, angle_first: bool) -> None:
        self._world = _World()
        self._world.set_state(state, angle_first=angle_first)

    def _frame(self, size: int) -> np.ndarray:
        return render_frame(self._world.agent_pos(), self._world.block_pose(), size, self.goal_pose)

    def _get_obs(self) -> Any:
        agent = self._world.agent_pos()
        pose = self._world.block_pose()
        if self.obs_type == "state":
            return np.array([*agent, pose[0], pose[1], pose[2] % (2 * math.pi)], dtype=np.float64)
        if self.obs_type == "keypoints":
            return np.concatenate([geo.block_keypoints(pose).ravel(), agent])
        pixels = self._frame(self.obs_size)
        if self.obs_type == "pixels":
            return pixels
        return {"pixels": pixels, "agent_pos": agent}

    def _get_info(self) -> dict[str, Any]:
        pose = self._world.block_pose()
        cov = geo.coverage(pose, self.goal_pose)
        return {
            "coverage": cov,
            "is_success": bool(cov > SUCCESS_THRESHOLD),
            "n_contacts": int(math.ceil(self._world.contact_points / SUBSTEPS)),
            "state": self.state,
            "pos_agent": self._world.agent_pos(),
            "vel_agent": np.array(self._world.agent.velocity, dtype=np.float64),
            "block_pose": pose,
            "goal_pose": self.goal_pose.copy(),
        }


def sample_initial_state(seed: int) -> np.ndarray:
    """The original benchmark's random initial state for a seed.

    Drawn with numpy's legacy RandomState in the original order: agent x, y in
    [50, 450), block x, y in [100, 400), block angle ~ N(0, (2pi)^2) - pi.
    """
    rs = np.random.RandomState(seed)
    return np.array(
        [
            rs.randint(50, 450),
            rs.randint(50, 450),
            rs.randint(100, 400),
            rs.randint(100, 400),
            rs.randn() * 2 * np.pi - np.pi,
        ],
        dtype=np.float64,
    )
