"""The project's simulators as gymnasium environments; importing this registers their ids.

Registration uses string entry points, so it imports no simulator: pymunk (PushT) and
MuJoCo (Meta-World) load on the first ``gym.make``. Without gymnasium installed (a robot
computer that only runs a policy) nothing is registered and nothing fails. The package's
other modules never import this folder's internals except through these ids and names.
"""

from __future__ import annotations

from typing import Any

from policy_accel.envs.metaworld.tasks import MAX_EPISODE_STEPS as _MW_MAX_STEPS
from policy_accel.envs.metaworld.tasks import MT10_TASKS
from policy_accel.envs.metaworld.tasks import env_id as metaworld_env_id

PUSHT_ID = "policy_accel/PushT-v0"
PUSHT_MAX_EPISODE_STEPS = 300  # Diffusion Policy's PushT evaluation length
METAWORLD_ID = "policy_accel/MetaWorld-v0"  # any MT10 task: gym.make(METAWORLD_ID, task="push")
_PUSHT_ENTRY = "policy_accel.envs.pusht.pusht_env:PushTEnv"
_MW_ENTRY = "policy_accel.envs.metaworld.metaworld_env:MetaWorldEnv"


def register_envs() -> bool:
    """Register every id with gymnasium (idempotent); False when gymnasium is not installed."""
    try:
        import gymnasium as gym
    except ImportError:
        return False
    if PUSHT_ID not in gym.registry:
        gym.register(
            id=PUSHT_ID,
            entry_point=_PUSHT_ENTRY,
            max_episode_steps=PUSHT_MAX_EPISODE_STEPS,
            kwargs={"obs_type": "state"},
        )
    for task, env_id in [(None, METAWORLD_ID)] + [(t, metaworld_env_id(t)) for t in MT10_TASKS]:
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point=_MW_ENTRY, max_episode_steps=_MW_MAX_STEPS, kwargs={"task": task} if task else {}
            )
    return True


register_envs()


def __getattr__(name: str) -> Any:
    if name == "PushTEnv":  # imports pymunk: only when asked for
        from policy_accel.envs.pusht import PushTEnv

        return PushTEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METAWORLD_ID",
    "MT10_TASKS",
    "PUSHT_ID",
    "PUSHT_MAX_EPISODE_STEPS",
    "PushTEnv",
    "metaworld_env_id",
    "register_envs",
]
