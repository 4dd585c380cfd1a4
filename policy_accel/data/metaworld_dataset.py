"""Torch dataset of Meta-World demonstration windows (the zarr of ``policy-accel record-demos``).

Items are ``{"obs": (horizon, obs_dim), "action": (horizon, 4)}`` in raw units, like
:class:`~policy_accel.data.datasets.PushTDataset`, so the trainer and policy treat both alike.
The observation layout matches :class:`~policy_accel.envs.metaworld.MetaWorldEnv`'s
``obs_type`` of the same name: ``metaworld_state_task`` is the 39-number state then the
one-hot of ``data/task_id`` (index in MT10_TASKS); ``metaworld_state`` the state alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch

from policy_accel.data.datasets import WindowDataset
from policy_accel.data.normalizer import Normalizer
from policy_accel.data.replay_buffer import ReplayBuffer, ReplayBufferError
from policy_accel.data.sequence_sampler import SequenceSampler, split_episodes
from policy_accel.envs.metaworld.tasks import MT10_TASKS, N_TASKS, OBS_TYPES, normalise_task


def metaworld_obs(state: np.ndarray, task_id: np.ndarray | None, obs_type: str, source: str = "buffer") -> np.ndarray:
    """Flat per-step observations of ``obs_type`` from the recorded state and task ids."""
    if obs_type not in OBS_TYPES:
        raise ValueError(f"unknown Meta-World obs_type '{obs_type}'; choose one of {sorted(OBS_TYPES)}")
    state = np.asarray(state, dtype=np.float32)
    if obs_type == "metaworld_state":
        return state
    if task_id is None:
        raise ReplayBufferError(
            f"{source} has no 'data/task_id': obs_type 'metaworld_state_task' needs the task "
            f"id of every step (record with `policy-accel record-demos`, or train a "
            f"single-task policy with env.obs_type=metaworld_state)"
        )
    task_id = np.asarray(task_id).astype(np.int64).reshape(-1)
    if len(task_id) and (task_id.min() < 0 or task_id.max() >= N_TASKS):
        raise ReplayBufferError(
            f"{source}: data/task_id must index MT10_TASKS (0..{N_TASKS - 1}), got {task_id.min()}..{task_id.max()}"
        )
    return np.concatenate([state, np.eye(N_TASKS, dtype=np.float32)[task_id]], axis=-1)


class MetaWorldDataset(WindowDataset):
    """Windows of ``horizon`` steps from a Meta-World demo buffer (train or validation split).

    ``tasks`` keeps only those tasks' episodes (``None``: all). A buffer with several tasks and
    ``obs_type='metaworld_state'`` is refused: without the task id one policy cannot tell them apart.
    """

    def __init__(
        self,
        zarr_path: str | Path | None = None,
        obs_type: str = "metaworld_state_task",
        horizon: int = 16,
        n_obs_steps: int = 2,
        n_action_steps: int = 8,
        val_ratio: float = 0.02,
        seed: int = 42,
        max_train_episodes: int | None = None,
        tasks: Sequence[str] | None = None,
        buffer: ReplayBuffer | None = None,
        split: Literal["train", "val"] = "train",
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown Meta-World obs_type '{obs_type}'; choose one of {sorted(OBS_TYPES)}")
        if n_obs_steps < 1 or n_action_steps < 1 or horizon < n_obs_steps - 1 + n_action_steps:
            raise ValueError(
                f"need horizon >= n_obs_steps - 1 + n_action_steps, got horizon={horizon}, "
                f"n_obs_steps={n_obs_steps}, n_action_steps={n_action_steps}"
            )
        source = str(zarr_path) if zarr_path is not None else "in-memory buffer"
        if buffer is None:
            if zarr_path is None:
                raise ValueError("give either zarr_path or buffer")
            buffer = _load(zarr_path)
        if "state" not in buffer.data or "action" not in buffer.data:
            raise ReplayBufferError(
                f"{source} is not a Meta-World demo buffer: needs data/state and data/action, has {sorted(buffer.data)}"
            )
        if buffer["state"].shape[1:] != (39,) or buffer["action"].shape[1:] != (4,):
            raise ReplayBufferError(
                f"{source}: Meta-World state/action must be 39/4 numbers per step, got "
                f"{buffer['state'].shape[1:]} / {buffer['action'].shape[1:]}"
            )
        task_id = buffer.data.get("task_id")
        self.buffer, self.obs_type, self.split, self.tasks = buffer, obs_type, split, tasks
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.val_ratio, self.seed, self.max_train_episodes = val_ratio, seed, max_train_episodes

        keep = np.ones(buffer.n_episodes, dtype=bool)
        episode_tasks = None
        if task_id is not None:
            starts = np.concatenate([[0], buffer.episode_ends[:-1]]).astype(np.int64)
            episode_tasks = np.asarray(task_id)[starts].astype(np.int64)
        if tasks is not None:
            if episode_tasks is None:
                raise ReplayBufferError(f"{source} has no 'data/task_id', so dataset.tasks cannot select episodes")
            wanted = [MT10_TASKS.index(normalise_task(t)) for t in tasks]
            keep = np.isin(episode_tasks, wanted)
            if not keep.any():
                raise ValueError(f"{source} has no episodes of tasks {list(tasks)}")
        if obs_type == "metaworld_state" and episode_tasks is not None and len(np.unique(episode_tasks[keep])) > 1:
            raise ValueError(
                f"{source} holds several tasks; obs_type 'metaworld_state' has no task id to tell them "
                f"apart: use metaworld_state_task or select one task (dataset.tasks=[push])"
            )

        kept = np.flatnonzero(keep)  # split among the selected tasks' episodes (all: Diffusion Policy's split)
        val_mask = np.zeros(buffer.n_episodes, dtype=bool)
        val_mask[kept[split_episodes(len(kept), val_ratio, seed)]] = True
        mask = (val_mask if split == "val" else ~val_mask) & keep
        if split == "train" and max_train_episodes is not None:
            chosen = np.flatnonzero(mask)
            picked = np.random.default_rng(seed).choice(chosen, min(max_train_episodes, len(chosen)), replace=False)
            mask = np.zeros_like(mask)
            mask[picked] = True
        self.episode_mask = mask
        self._fit_mask = keep
        self._fields = {
            "obs": metaworld_obs(buffer["state"], task_id, obs_type, source),
            "action": buffer["action"].astype(np.float32),
        }
        self._sampler = SequenceSampler(
            ReplayBuffer(self._fields, buffer.episode_ends),
            horizon,
            pad_before=n_obs_steps - 1,
            pad_after=n_action_steps - 1,
            episode_mask=mask,
        )

    def validation(self) -> MetaWorldDataset:
        """The held-out episodes of the same split seed."""
        return MetaWorldDataset(
            obs_type=self.obs_type,
            horizon=self.horizon,
            n_obs_steps=self.n_obs_steps,
            n_action_steps=self.n_action_steps,
            val_ratio=self.val_ratio,
            seed=self.seed,
            tasks=self.tasks,
            buffer=self.buffer,
            split="val",
        )

    def fit_normalizer(self) -> Normalizer:
        """Min/max over every step of the selected tasks' episodes (as Diffusion Policy fits on all data)."""
        steps = np.repeat(self._fit_mask, self.buffer.episode_lengths)
        return Normalizer.fit({"obs": self._fields["obs"][steps], "action": self._fields["action"][steps]})

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        window = self._sampler.sample_sequence(index)
        return {"obs": torch.from_numpy(window["obs"]), "action": torch.from_numpy(window["action"])}


def _load(zarr_path: str | Path) -> ReplayBuffer:
    """The state, action and (when present) task_id arrays of a demo zarr."""
    import zarr

    path = Path(zarr_path)
    if not path.exists():
        raise FileNotFoundError(
            f"Meta-World demo buffer not found: '{path}'; record one with `policy-accel record-demos output={path}`"
        )
    available = set(zarr.open_group(str(path), mode="r").get("data", {}).keys()) if path.is_dir() else set()
    keys = [k for k in ("state", "action", "task_id") if k in available] or None
    return ReplayBuffer.from_zarr(path, keys=keys)
