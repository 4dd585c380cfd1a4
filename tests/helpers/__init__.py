"""Shared test fixtures' building blocks: a tiny random Diffusion Policy in env units."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policy_accel.data.normalizer import Normalizer
from policy_accel.model.config import DiffusionPolicyConfig, UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy

TINY_UNET = UnetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16)


def tiny_policy(sampler: Any = "ddim-3", seed: int = 0, obs_dim: int = 20) -> DiffusionPolicy:
    """A 2-level U-Net policy with a normaliser fitted on uniform [0, 512] obs/actions."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    normalizer = Normalizer.fit({"obs": rng.uniform(0, 512, (256, obs_dim)), "action": rng.uniform(0, 512, (256, 2))})
    return DiffusionPolicy(DiffusionPolicyConfig(obs_dim=obs_dim, unet=TINY_UNET), normalizer, sampler=sampler).eval()


def tiny_teacher_and_dataset() -> tuple[DiffusionPolicy, Any]:
    """A tiny U-Net teacher and the 4-episode keypoint dataset its normaliser is fitted on (distill tests)."""
    from policy_accel.data.datasets import PushTDataset
    from policy_accel.data.replay_buffer import ReplayBuffer

    rng = np.random.default_rng(0)
    buffer = ReplayBuffer()
    for _ in range(4):
        t = np.linspace(0, 1, 30)[:, None]
        agent = rng.uniform(150, 350, 2) + 60 * np.hstack([np.sin(3 * t), np.cos(2 * t)])
        state = np.hstack([agent, np.full((30, 3), 200.0)]).astype(np.float32)
        buffer.add_episode(
            {
                "state": state,
                "keypoint": np.full((30, 9, 2), 250.0, np.float32),
                "action": (agent + 3).astype(np.float32),
            }
        )
    dataset = PushTDataset(buffer=buffer, obs_type="keypoints", val_ratio=0.0)
    torch.manual_seed(0)
    teacher = DiffusionPolicy(DiffusionPolicyConfig(unet=TINY_UNET), dataset.fit_normalizer()).eval()
    return teacher, dataset
