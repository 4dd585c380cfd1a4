"""PushT simulator: pymunk physics, Pillow rendering, gymnasium API."""

try:  # the simulator's own packages are an optional extra of the project
    import gymnasium  # noqa: F401
    import pymunk  # noqa: F401
    import shapely  # noqa: F401
    from PIL import Image  # noqa: F401
except ImportError as _exc:
    raise ImportError(
        f"PushT needs gymnasium, pymunk, shapely and pillow ({_exc.name} is missing): "
        'pip install "policy-accel[pusht]"',
        name=_exc.name,
    ) from _exc

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
