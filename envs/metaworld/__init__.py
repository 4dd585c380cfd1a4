"""Meta-World MT10 tasks (robot-arm manipulation, MuJoCo) as seeded gymnasium envs.

The task list and registration need no simulator; :class:`MetaWorldEnv` imports ``metaworld``
(and MuJoCo) only when first used.
"""

from __future__ import annotations

from typing import Any

from policy_accel.envs.metaworld.tasks import (
    ACTION_DIM,
    MAX_EPISODE_STEPS,
    MT10_TASKS,
    N_TASKS,
    OBS_TYPES,
    STATE_DIM,
    env_id,
    normalise_task,
    task_index,
)


def __getattr__(name: str) -> Any:
    if name in ("MetaWorldEnv", "make_simulator"):
        from policy_accel.envs.metaworld import metaworld_env

        return getattr(metaworld_env, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTION_DIM",
    "MAX_EPISODE_STEPS",
    "MT10_TASKS",
    "MetaWorldEnv",
    "N_TASKS",
    "OBS_TYPES",
    "STATE_DIM",
    "env_id",
    "make_simulator",
    "normalise_task",
    "task_index",
]
