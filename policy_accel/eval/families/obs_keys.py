"""Env observations -> what a project or Diffusion Policy checkpoint's ``select_action`` takes.

Array policies read the env's flat observation as is. Dict policies (image Diffusion Policies)
name their keys and shapes in ``config.obs_shapes``; the env config's ``obs_keys`` maps each
policy key to an env key (``{image: pixels, agent_pos: agent_pos}`` for image PushT), and camera
frames are turned from the env's (H, W, C) uint8 into the (C, H, W) float [0, 1] that Diffusion
Policy's image datasets and env wrappers feed, so a checkpoint sees what it was trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from policy_accel.eval.families.base import ObsAdapter

if TYPE_CHECKING:
    import gymnasium as gym


def _identity(obs: Any) -> Any:
    return obs


def make_obs_adapter(
    space: gym.Space,
    policy_config: Any,
    obs_type: str,
    obs_keys: Mapping[str, str] | None = None,
    env_hint: str | None = None,
) -> ObsAdapter:
    """Check the env's observation space against the policy and return the converter of batched obs.

    ``env_hint`` is the ``env=`` override an obs-type mismatch error suggests."""
    import gymnasium as gym

    if obs_type != policy_config.obs_type:
        raise ValueError(
            f"policy was trained on obs_type '{policy_config.obs_type}' but the env config gives "
            f"'{obs_type}'" + (f" (pick {env_hint})" if env_hint else "")
        )
    if not policy_config.dict_obs:
        if not isinstance(space, gym.spaces.Box) or space.shape != (policy_config.obs_dim,):
            raise ValueError(
                f"policy expects flat observations of size {policy_config.obs_dim}; env obs_type "
                f"'{obs_type}' gives {space}"
            )
        return _identity
    if not isinstance(space, gym.spaces.Dict):
        raise ValueError(
            f"policy observes a dict {list(policy_config.obs_shapes)} but env obs_type '{obs_type}' gives {space}"
        )
    mapping = {key: str((obs_keys or {}).get(key, key)) for key in policy_config.obs_shapes}
    converters: dict[str, tuple[str, bool]] = {}
    for key, entry in policy_config.obs_shapes.items():
        env_key, shape = mapping[key], tuple(int(d) for d in entry["shape"])
        if env_key not in space.spaces:
            raise ValueError(
                f"policy key '{key}' reads env key '{env_key}', which the env does not give "
                f"(env keys {list(space.spaces)}; set env.obs_keys)"
            )
        env_shape = tuple(space.spaces[env_key].shape)
        image = entry["type"] == "rgb"
        got = (env_shape[-1], *env_shape[:-1]) if image and len(env_shape) == 3 else env_shape
        if got != shape:
            raise ValueError(
                f"policy key '{key}' expects {shape} but env key '{env_key}' gives {env_shape}"
                f"{' (channels last)' if image else ''}"
            )
        converters[key] = (env_key, image)

    def adapt(obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for key, (env_key, image) in converters.items():
            value = np.asarray(obs[env_key])
            if image:  # (..., H, W, C) uint8 -> (..., C, H, W) float32 in [0, 1]
                value = np.moveaxis(value.astype(np.float32) / 255.0, -1, -3)
            out[key] = value.astype(np.float32)
        return out

    return adapt
