"""LeRobot's feature names: the keys a LeRobot folder's observations, actions and stats use.

Kept in one place so the reader, the normaliser and the env-side observation mapping agree on them.
"""

from __future__ import annotations

IMAGE_KEY = "observation.image"  # the single-camera name LeRobot's PushT datasets use
STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
ACTION_KEY = "action"
LEROBOT_OBS_TYPE = "lerobot"  # DiffusionPolicyConfig.obs_type of a loaded folder: dict observations by feature name
ENCODER_TYPE = "lerobot"  # DiffusionPolicyConfig.obs_encoder["type"] of a loaded folder

__all__ = ["ACTION_KEY", "ENCODER_TYPE", "ENV_STATE_KEY", "IMAGE_KEY", "LEROBOT_OBS_TYPE", "STATE_KEY"]
