"""PushT simulator: pymunk physics, Pillow rendering, gymnasium API."""

from policy_accel.envs.pusht.geometry import GOAL_POSE, KEYPOINTS_LOCAL, block_keypoints, block_polygons, coverage
from policy_accel.envs.pusht.pusht_env import OBS_TYPES, PushTEnv, sample_initial_state
from policy_accel.envs.pusht.render import render_frame

__all__ = [
    "GOAL_POSE",
    "KEYPOINTS_LOCAL",
    "OBS_TYPES",
    "PushTEnv",
    "block_keypoints",
    "block_polygons",
    "coverage",
    "render_frame",
    "sample_initial_state",
]
