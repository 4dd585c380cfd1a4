"""Shared test fixtures' building blocks: a tiny random Diffusion Policy in env units."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from policy_accel.data.normalizer import Normalizer
from policy_accel.policy.config import DiffusionPolicyConfig, UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy

TINY_UNET = UnetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16)


def tiny_policy(sampler: Any = "ddim-3", seed: int = 0, obs_dim: int = 20) -> DiffusionPolicy:
    """A 2-level U-Net policy with a normaliser fitted on uniform [0, 512] obs/actions."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    normalizer = Normalizer.fit({"obs": rng.uniform(0, 512, (256, obs_dim)), "action": rng.uniform(0, 512, (256, 2))})
    return DiffusionPolicy(DiffusionPolicyConfig(obs_dim=obs_dim, unet=TINY_UNET), normalizer, sampler=sampler).eval()
