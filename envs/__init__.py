"""Simulation environments; importing this registers them with gymnasium."""

import gymnasium as gym

from policy_accel.envs.pusht import PushTEnv

PUSHT_ID = "policy_accel/PushT-v0"

# Guarded so that repeated imports (or module reloads) neither warn nor fail.
if PUSHT_ID not in gym.registry:
    gym.register(
        id=PUSHT_ID,
        entry_point="policy_accel.envs.pusht.pusht_env:PushTEnv",
        max_episode_steps=300,
        kwargs={"obs_type": "state"},
    )

__all__ = ["PUSHT_ID", "PushTEnv"]
