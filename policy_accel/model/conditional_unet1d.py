"""Diffusion Policy's 1-D temporal U-Net noise predictor (Chi et al., RSS 2023).

The U-Net convolves over the action chunk's time axis; every residual block is
FiLM-modulated by one global conditioning vector: a sinusoidal embedding of the
diffusion step concatenated with the flattened observation history. Module names
follow Diffusion Policy's ``ConditionalUnet1D`` so its state_dict keys
(``down_modules.0.0.blocks.0.block.0.weight``, ...) load unchanged.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sin/cos embedding of a scalar diffusion step."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2 or dim < 4:
            raise ValueError(f"step embedding dim must be even and >= 4, got {dim}")
        self.dim = dim
        half = dim // 2
        # computed once: rebuilding it per call cost ~10% of a batch-1 forward on a CPU
        self.register_buffer(
            "freqs", torch.exp(torch.arange(half) * (-math.log(10000.0) / (half - 1))), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Downsample1d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample1d(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias, or bias only) in between."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int,
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, n_groups=n_groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, n_groups=n_groups),
            ]
        )
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale
        cond_channels = out_channels * 2 if cond_predict_scale else out_channels
        # index 2 is parameter-free, so keys stay 'cond_encoder.1.*' as in Diffusion Policy
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, cond_channels), nn.Unflatten(-1, (-1, 1)))
        self.residual_conv = nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond)
        if self.cond_predict_scale:
            scale, bias = embed.reshape(embed.shape[0], 2, self.out_channels, 1).unbind(1)
            out = scale * out + bias
        else:
            out = out + embed
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class ConditionalUnet1D(nn.Module):
    """Noise predictor eps(x_t, t | global_cond) over action chunks ``(B, T, input_dim)``."""

    def __init__(
        self,
        input_dim: int,
        global_cond_dim: int | None = None,
        diffusion_step_embed_dim: int = 256,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        cond_predict_scale: bool = True,
    ) -> None:
        super().__init__()
        if len(down_dims) < 1:
            raise ValueError("down_dims needs at least one level")
        bad = [d for d in down_dims if d % n_groups]
        if bad:
            raise ValueError(f"down_dims {list(down_dims)} must be divisible by n_groups={n_groups}")
        all_dims = [input_dim, *down_dims]
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed)
        )
        cond_dim = dsed + (global_cond_dim or 0)

        def block(cin: int, cout: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(cin, cout, cond_dim, kernel_size, n_groups, cond_predict_scale)

        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        self.local_cond_encoder = None  # kept for key compatibility; PushT uses global conditioning only
        self.down_modules = nn.ModuleList(
            [
                nn.ModuleList(
                    [block(cin, cout), block(cout, cout), Downsample1d(cout) if i < len(in_out) - 1 else nn.Identity()]
                )
                for i, (cin, cout) in enumerate(in_out)
            ]
        )
        self.mid_modules = nn.ModuleList([block(all_dims[-1], all_dims[-1]), block(all_dims[-1], all_dims[-1])])
        self.up_modules = nn.ModuleList(
            [
                nn.ModuleList(
                    [block(cout * 2, cin), block(cin, cin), Upsample1d(cin) if i < len(in_out) - 1 else nn.Identity()]
                )
                for i, (cin, cout) in enumerate(reversed(in_out[1:]))
            ]
        )
        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size), nn.Conv1d(down_dims[0], input_dim, 1)
        )
        self.input_dim, self.global_cond_dim = input_dim, global_cond_dim
        self.n_downsamples = len(in_out) - 1

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | int, global_cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``sample`` (B, T, input_dim), ``timestep`` scalar or (B,), ``global_cond`` (B, cond) -> (B, T, input_dim)."""
        x = sample.transpose(1, 2)
        # a tensor passes through untouched (TorchScript tracing keeps it an input, not a constant)
        timesteps = timestep if isinstance(timestep, torch.Tensor) else torch.as_tensor(timestep, device=sample.device)
        if timesteps.ndim == 0:
            timesteps = timesteps[None]
        feature = self.diffusion_step_encoder(timesteps.expand(sample.shape[0]))
        if global_cond is not None:
            feature = torch.cat([feature, global_cond], dim=-1)
        skips = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet2(resnet(x, feature), feature)
            skips.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid(x, feature)
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = upsample(resnet2(resnet(x, feature), feature))
        return self.final_conv(x).transpose(1, 2)
