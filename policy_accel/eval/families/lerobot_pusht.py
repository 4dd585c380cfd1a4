"""PushT observations under LeRobot's feature names, so a LeRobot policy folder runs in the project's rollouts.

LeRobot's PushT policies observe ``observation.image`` (the rendered frame, (3, H, W) float in [0, 1]) and/or
``observation.environment_state`` (the 9 block keypoints flattened x0, y0, x1, y1, ...), always with
``observation.state`` (the agent position). The project's PushT env gives the same quantities under its own
obs types; this module picks the obs type (and frame size) a policy's features need and renames. A policy
asking for anything PushT cannot give gets one error listing every missing feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from policy_accel.envs import PUSHT_ID
from policy_accel.eval.families.base import cfg_value
from policy_accel.formats.lerobot.features import ENV_STATE_KEY, IMAGE_KEY, LEROBOT_OBS_TYPE, STATE_KEY

N_KEYPOINT_VALUES, AGENT_DIM = 18, 2
PUSHT_PROVIDES = (
    f"{IMAGE_KEY} (3, S, S) rendered at any size S, {STATE_KEY} ({AGENT_DIM},) agent position, "
    f"{ENV_STATE_KEY} ({N_KEYPOINT_VALUES},) block keypoints (without an image)"
)


@dataclass
class EnvPlan:
    """How to run a policy keyed by LeRobot feature names on PushT."""

    obs_type: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    adapt: Callable[[Any], dict[str, np.ndarray]] = lambda obs: obs


def uses_feature_names(policy_config: Any) -> bool:
    """Does the policy observe LeRobot feature names (and so need this mapping rather than ``obs_keys``)?"""
    return getattr(policy_config, "obs_type", None) == LEROBOT_OBS_TYPE


def pusht_plan(obs_shapes: Mapping[str, Mapping[str, Any]], env_id: str = PUSHT_ID) -> EnvPlan:
    """The PushT obs type, env options and observation renaming that give a policy its features."""
    shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in obs_shapes.items()}
    if env_id != PUSHT_ID:
        raise ValueError(
            f"a policy observing LeRobot features {list(shapes)} runs on PushT ({PUSHT_ID}), not '{env_id}'"
        )
    image = shapes.get(IMAGE_KEY)
    missing = []
    for key, shape in shapes.items():
        if key == IMAGE_KEY and (len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2]):
            missing.append(f"{key} {shape} (PushT renders square RGB frames (3, S, S))")
        elif key == STATE_KEY and shape != (AGENT_DIM,):
            missing.append(f"{key} {shape} (PushT's agent position is ({AGENT_DIM},))")
        elif key == ENV_STATE_KEY and (shape != (N_KEYPOINT_VALUES,) or image is not None):
            missing.append(f"{key} {shape} (PushT gives ({N_KEYPOINT_VALUES},) keypoints, and not beside an image)")
        elif key not in (IMAGE_KEY, STATE_KEY, ENV_STATE_KEY):
            missing.append(f"{key} {shape}")
    if missing:
        raise ValueError(
            f"no environment of this project provides the policy's features {missing}; PushT provides {PUSHT_PROVIDES}"
        )
    if image is not None:

        def from_pixels(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
            out = {IMAGE_KEY: np.moveaxis(np.asarray(obs["pixels"], dtype=np.float32) / 255.0, -1, -3)}
            if STATE_KEY in shapes:
                out[STATE_KEY] = np.asarray(obs["agent_pos"], dtype=np.float32)
            return out

        return EnvPlan("pixels_agent_pos", {"obs_size": image[1]}, from_pixels)

    def from_keypoints(obs: Any) -> dict[str, np.ndarray]:
        values = np.asarray(obs, dtype=np.float32)  # (..., 18 keypoint values then the agent's x, y)
        out = {STATE_KEY: values[..., N_KEYPOINT_VALUES : N_KEYPOINT_VALUES + AGENT_DIM]}
        if ENV_STATE_KEY in shapes:
            out[ENV_STATE_KEY] = values[..., :N_KEYPOINT_VALUES]
        return out

    return EnvPlan("keypoints", {}, from_keypoints)


def env_plan(policy_config: Any, env_cfg: Any = None) -> EnvPlan | None:
    """:func:`pusht_plan` for policies keyed by LeRobot feature names; ``None`` for every other policy."""
    if not uses_feature_names(policy_config):
        return None
    return pusht_plan(policy_config.obs_shapes or {}, str(cfg_value(env_cfg, "id", PUSHT_ID)))
