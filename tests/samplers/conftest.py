"""The samplers' shared fixtures: a tiny untrained U-Net denoiser and a batch of 3 conditionings for it."""

from __future__ import annotations

import pytest
import torch

from policy_accel.model.conditional_unet1d import ConditionalUnet1D

BATCH = 3  # the conditioning batch; tests' chunk shapes are (BATCH, 16, 2)


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    net = ConditionalUnet1D(
        2, global_cond_dim=8, diffusion_step_embed_dim=16, down_dims=(16, 32), kernel_size=3, n_groups=4
    ).eval()
    return lambda x, t, c: net(x, t, c)


@pytest.fixture(scope="module")
def cond():
    return torch.randn(BATCH, 8, generator=torch.Generator().manual_seed(1))
