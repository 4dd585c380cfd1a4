"""Reading the Meta-World part of a hydra ``env`` config (``env=metaworld`` or ``env=metaworld_mt10``)."""

from __future__ import annotations

from typing import Any

from policy_accel.envs.metaworld.tasks import OBS_TYPES, normalise_task


def is_metaworld_obs(obs_type: Any) -> bool:
    """Whether an ``obs_type`` (of an env config or a checkpoint) is a Meta-World one."""
    return isinstance(obs_type, str) and obs_type in OBS_TYPES


def metaworld_tasks(env_cfg: Any) -> list[str]:
    """The tasks an env config names: ``tasks`` (a list, env=metaworld_mt10) or ``task`` (one, env=metaworld)."""
    get = env_cfg.get if hasattr(env_cfg, "get") else lambda key, default=None: getattr(env_cfg, key, default)
    tasks = get("tasks", None)
    if tasks is None:
        task = get("task", None)
        if task is None:
            raise ValueError("a Meta-World env config needs 'task' (env=metaworld env.task=push) or 'tasks'")
        tasks = [task]
    names = [normalise_task(str(t)) for t in tasks]
    if not names:
        raise ValueError("a Meta-World env config's 'tasks' is empty")
    return names
