"""Torch datasets of PushT demonstration windows for keypoint, state and image policies.

Each item is ``{"obs": (horizon, obs_dim) or image dict, "action": (horizon, 2)}`` in raw
units; the policy normalises. Observation layouts match the environment's
``obs_type`` of the same name, so a model trained here reads the env directly:

* ``keypoints``: 9 block keypoints (x, y) then agent (x, y): 20 numbers
* ``state``: agent x, y, block x, y, angle: 5 numbers
* ``pixels_agent_pos``: ``{"pixels": (3, 96, 96) float in [0, 1], "agent_pos": (2,)}``
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from policy_accel.data.normalizer import Normalizer
from policy_accel.data.replay_buffer import ReplayBuffer
from policy_accel.data.sequence_sampler import SequenceSampler, split_episodes

ObsType = Literal["keypoints", "state", "pixels_agent_pos"]
OBS_TYPES: tuple[str, ...] = ("keypoints", "state", "pixels_agent_pos")

_BUFFER_KEYS = {
    "keypoints": ["keypoint", "state", "action"],
    "state": ["state", "action"],
    "pixels_agent_pos": ["img", "state", "action"],
}


def lowdim_obs(buffer_data: dict[str, np.ndarray], obs_type: str) -> np.ndarray:
    """Flat observation array of a low-dimensional ``obs_type`` from buffer arrays."""
    if obs_type == "keypoints":
        keypoints = buffer_data["keypoint"]
        return np.concatenate([keypoints.reshape(len(keypoints), -1), buffer_data["state"][:, :2]], axis=-1).astype(
            np.float32
        )
    if obs_type == "state":
        return buffer_data["state"].astype(np.float32)
    raise ValueError(f"'{obs_type}' is not a low-dimensional observation type")


class WindowDataset(Dataset):
    """What every demo dataset shares: training windows cut by a :class:`SequenceSampler` from flat
    ``_fields`` (``"obs"`` and ``"action"`` arrays), so sizes and length are read in one place."""

    _fields: dict[str, np.ndarray]
    _sampler: SequenceSampler

    @property
    def obs_dim(self) -> int:
        return int(self._fields["obs"].shape[-1])

    @property
    def action_dim(self) -> int:
        return int(self._fields["action"].shape[-1])

    def __len__(self) -> int:
        return len(self._sampler)


class PushTDataset(WindowDataset):
    """Windows of ``horizon`` steps from the PushT replay buffer (train or validation split)."""

    def __init__(
        self,
        zarr_path: str | Path | None = None,
        obs_type: ObsType = "keypoints",
        horizon: int = 16,
        n_obs_steps: int = 2,
        n_action_steps: int = 8,
        val_ratio: float = 0.02,
        seed: int = 42,
        max_train_episodes: int | None = None,
        buffer: ReplayBuffer | None = None,
        split: Literal["train", "val"] = "train",
    ) -> None:
        if obs_type not in OBS_TYPES:
            raise ValueError(f"unknown obs_type '{obs_type}'; choose one of {OBS_TYPES}")
        if n_obs_steps < 1 or n_action_steps < 1 or horizon < n_obs_steps - 1 + n_action_steps:
            raise ValueError(
                f"need horizon >= n_obs_steps - 1 + n_action_steps, got horizon={horizon}, "
                f"n_obs_steps={n_obs_steps}, n_action_steps={n_action_steps}"
            )
        if buffer is None:
            if zarr_path is None:
                raise ValueError("give either zarr_path or buffer")
            buffer = ReplayBuffer.from_zarr(zarr_path, keys=_BUFFER_KEYS[obs_type])
        self.buffer, self.obs_type, self.split = buffer, obs_type, split
        self.horizon, self.n_obs_steps, self.n_action_steps = horizon, n_obs_steps, n_action_steps
        self.val_ratio, self.seed, self.max_train_episodes = val_ratio, seed, max_train_episodes

        val_mask = split_episodes(buffer.n_episodes, val_ratio, seed)
        mask = val_mask if split == "val" else ~val_mask
        if split == "train" and max_train_episodes is not None:
            chosen = np.flatnonzero(mask)
            keep = np.random.default_rng(seed).choice(chosen, min(max_train_episodes, len(chosen)), replace=False)
            mask = np.zeros_like(mask)
            mask[keep] = True
        self.episode_mask = mask

        if obs_type == "pixels_agent_pos":
            self._fields = {
                "pixels": buffer["img"],
                "agent_pos": buffer["state"][:, :2].astype(np.float32),
                "action": buffer["action"].astype(np.float32),
            }
        else:
            self._fields = {"obs": lowdim_obs(buffer.data, obs_type), "action": buffer["action"].astype(np.float32)}
        self._sampler = SequenceSampler(
            ReplayBuffer(self._fields, buffer.episode_ends),
            horizon,
            pad_before=n_obs_steps - 1,
            pad_after=n_action_steps - 1,
            episode_mask=mask,
        )

    def validation(self) -> PushTDataset:
        """The held-out episodes of the same split seed."""
        return PushTDataset(
            obs_type=self.obs_type,
            horizon=self.horizon,
            n_obs_steps=self.n_obs_steps,
            n_action_steps=self.n_action_steps,
            val_ratio=self.val_ratio,
            seed=self.seed,
            buffer=self.buffer,
            split="val",
        )

    def fit_normalizer(self) -> Normalizer:
        """Min/max stats over all steps of the buffer (Diffusion Policy fits on all data)."""
        if self.obs_type == "pixels_agent_pos":
            return Normalizer.fit({"agent_pos": self._fields["agent_pos"], "action": self._fields["action"]})
        return Normalizer.fit({"obs": self._fields["obs"], "action": self._fields["action"]})

    @property
    def obs_dim(self) -> int:
        if self.obs_type == "pixels_agent_pos":
            return 2
        return super().obs_dim

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | dict[str, torch.Tensor]]:
        window = self._sampler.sample_sequence(index)
        action = torch.from_numpy(window["action"])
        if self.obs_type == "pixels_agent_pos":
            pixels = torch.from_numpy(np.moveaxis(window["pixels"][: self.n_obs_steps], -1, 1) / 255.0).float()
            obs = {"pixels": pixels, "agent_pos": torch.from_numpy(window["agent_pos"][: self.n_obs_steps])}
            return {"obs": obs, "action": action}
        return {"obs": torch.from_numpy(window["obs"]), "action": action}
