"""The Meta-World MT10 task list and the observation layouts (no simulator import here).

Kept free of ``metaworld``/``mujoco`` imports so that registering the gymnasium ids, reading
configs and validating task names stay cheap; the simulator is imported on first use.
"""

from __future__ import annotations

# MT10, in Meta-World's own order; a task's index here is its one-hot position in the
# ``state_task`` observation, so the order is part of every trained checkpoint: never reorder.
MT10_TASKS: tuple[str, ...] = (
    "reach",
    "push",
    "pick-place",
    "door-open",
    "drawer-open",
    "drawer-close",
    "button-press-topdown",
    "peg-insert-side",
    "window-open",
    "window-close",
)
N_TASKS = len(MT10_TASKS)
STATE_DIM = 39  # hand xyz, gripper, 2 object poses (padded), the previous frame's 18, goal xyz
ACTION_DIM = 4  # hand dx, dy, dz (scaled by 1/100 m) and gripper effort, all in [-1, 1]
MAX_EPISODE_STEPS = 500  # Meta-World's own horizon (the simulator refuses to step past it)

# obs_type -> size. ``metaworld_state_task`` appends the one-hot MT10 task index to the 39-number
# state, so one multi-task policy knows which task it is solving (the state alone does not say:
# several tasks share objects and goal ranges). ``metaworld_state`` is the bare state for
# single-task policies.
OBS_TYPES: dict[str, int] = {"metaworld_state": STATE_DIM, "metaworld_state_task": STATE_DIM + N_TASKS}


def task_index(task: str) -> int:
    """Index of an MT10 task name (``push`` or ``push-v3``); a clear error for anything else."""
    name = normalise_task(task)
    return MT10_TASKS.index(name)


def normalise_task(task: str) -> str:
    """``push-v3`` -> ``push``; raises ``ValueError`` naming the MT10 tasks for an unknown name."""
    if not isinstance(task, str):
        raise ValueError(f"Meta-World task must be a name, got {task!r}; choose one of {list(MT10_TASKS)}")
    name = task[:-3] if task.endswith("-v3") else task
    if name not in MT10_TASKS:
        raise ValueError(f"unknown Meta-World task '{task}'; the MT10 tasks are {list(MT10_TASKS)}")
    return name


def env_id(task: str) -> str:
    """The gymnasium id registered for one task, e.g. ``policy_accel/MetaWorld-push-v0``."""
    return f"policy_accel/MetaWorld-{normalise_task(task)}-v0"
