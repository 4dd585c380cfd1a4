"""Simulation environments; importing this registers them with gymnasium."""

import gymnasium as gym

from policy_accel.envs.metaworld.tasks import MAX_EPISODE_STEPS as _MW_MAX_STEPS
from policy_accel.envs.metaworld.tasks import MT10_TASKS
from policy_accel.envs.metaworld.tasks import env_id as metaworld_env_id
from policy_accel.envs.pusht import PushTEnv

PUSHT_ID = "policy_accel/PushT-v0"
METAWORLD_ID = "policy_accel/MetaWorld-v0"  # any MT10 task: gym.make(METAWORLD_ID, task="push")

# Guarded so that repeated imports (or module reloads) neither warn nor fail.
if PUSHT_ID not in gym.registry:
    gym.register(
        id=PUSHT_ID,
        entry_point="policy_accel.envs.pusht.pusht_env:PushTEnv",
        max_episode_steps=300,
        kwargs={"obs_type": "state"},
    )

# Meta-World: string entry points, so registering does not import MuJoCo.
_MW_ENTRY = "policy_accel.envs.metaworld.metaworld_env:MetaWorldEnv"
for _task, _id in [(None, METAWORLD_ID)] + [(t, metaworld_env_id(t)) for t in MT10_TASKS]:
    if _id not in gym.registry:
        gym.register(
            id=_id, entry_point=_MW_ENTRY, max_episode_steps=_MW_MAX_STEPS, kwargs={"task": _task} if _task else {}
        )

__all__ = ["METAWORLD_ID", "MT10_TASKS", "PUSHT_ID", "PushTEnv", "metaworld_env_id"]
