"""Diffusion Policy's hybrid observation encoder (robomimic's ``ObservationEncoder``), in plain torch.

Per frame and per camera key: centre crop (the evaluation behaviour of DP's crop randomiser) ->
ResNet-18 trunk (BatchNorm optionally replaced by GroupNorm) -> spatial softmax keypoints
(1x1 conv to ``num_kp`` maps, softmax over positions, expected x/y on a [-1, 1] grid) -> flatten ->
linear -> ReLU. Low-dim keys pass through unchanged. The features are concatenated in the key
order of ``obs_shapes``, which is how robomimic orders them, so the result is DP's ``global_cond``
frame by frame. :class:`SpatialSoftmax` and :func:`center_crop` are reusable by other loaders.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from policy_accel.model.resnet import RESNET18_OUT_CHANNELS, resnet18_trunk


def center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop ``(..., H, W)`` to its centre ``height x width`` (start ``(H - height) // 2``, as robomimic)."""
    h, w = images.shape[-2:]
    if not torch.jit.is_tracing() and (height > h or width > w):  # traced (compiled) shapes are fixed
        raise ValueError(f"crop {height}x{width} is larger than the image {h}x{w}")
    top, left = (h - height) // 2, (w - width) // 2
    return images[..., top : top + height, left : left + width]


def resnet18_output_hw(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the ResNet-18 trunk's output: conv 7/2, maxpool 3/2, then three 3x3/2 stages."""

    def down(n: int, kernel: int, pad: int) -> int:
        return (n + 2 * pad - kernel) // 2 + 1

    sizes = []
    for n in (height, width):
        n = down(down(n, 7, 3), 3, 1)
        for _ in range(3):
            n = down(n, 3, 1)
        sizes.append(n)
    return sizes[0], sizes[1]


class SpatialSoftmax(nn.Module):
    """``(N, C, H, W) -> (N, num_kp * 2)``: expected image coordinates ``[x0, y0, x1, y1, ...]`` of
    ``num_kp`` softmax attention maps. Buffer names follow robomimic (``pos_x``, ``pos_y``,
    ``temperature``, the 1x1 conv ``nets``)."""

    def __init__(self, in_channels: int, height: int, width: int, num_kp: int = 32, temperature: float = 1.0) -> None:
        super().__init__()
        self.num_kp, self.height, self.width = num_kp, height, width
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        grid_y, grid_x = torch.meshgrid(
            torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij"
        )
        self.register_buffer("temperature", torch.full((1,), float(temperature)))
        self.register_buffer("pos_x", grid_x.reshape(1, height * width).float().clone())
        self.register_buffer("pos_y", grid_y.reshape(1, height * width).float().clone())

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        maps = self.nets(feature).reshape(-1, self.height * self.width)
        attention = torch.softmax(maps / self.temperature, dim=-1)
        xy = torch.stack([(self.pos_x * attention).sum(1), (self.pos_y * attention).sum(1)], dim=-1)
        return xy.reshape(-1, self.num_kp * 2)


class VisualCore(nn.Module):
    """One camera: crop -> ResNet-18 trunk -> SpatialSoftmax -> Linear -> ReLU."""

    def __init__(
        self,
        image_shape: Sequence[int],
        crop_shape: Sequence[int] | None,
        num_kp: int,
        feature_dim: int,
        group_norm: bool,
    ) -> None:
        super().__init__()
        channels, height, width = (int(d) for d in image_shape)
        self.crop = tuple(int(d) for d in crop_shape) if crop_shape is not None else None
        in_h, in_w = self.crop if self.crop is not None else (height, width)
        self.backbone = resnet18_trunk(group_norm=group_norm, in_channels=channels)
        self.pool = SpatialSoftmax(RESNET18_OUT_CHANNELS, *resnet18_output_hw(in_h, in_w), num_kp=num_kp)
        self.linear = nn.Linear(num_kp * 2, feature_dim)
        self.feature_dim = feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:
            images = center_crop(images, *self.crop)
        return torch.relu(self.linear(self.pool(self.backbone(images))))


class RobomimicObsEncoder(nn.Module):
    """``{key: (N, *shape)} (normalised) -> (N, feature_dim)``, features concatenated in ``obs_shapes`` order."""

    def __init__(
        self,
        obs_shapes: Mapping[str, Mapping[str, Any]],
        crop_shape: Sequence[int] | None = None,
        num_kp: int = 32,
        feature_dim: int = 64,
        group_norm: bool = True,
    ) -> None:
        super().__init__()
        self.keys = list(obs_shapes)
        self.shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in obs_shapes.items()}
        self.obs_nets = nn.ModuleDict(
            {
                key: VisualCore(self.shapes[key], crop_shape, num_kp, feature_dim, group_norm)
                for key, entry in obs_shapes.items()
                if entry["type"] == "rgb"
            }
        )
        for key in self.obs_nets:
            if len(self.shapes[key]) != 3:
                raise ValueError(f"rgb key '{key}' must have shape (C, H, W), got {self.shapes[key]}")
        self.feature_dim = sum(
            self.obs_nets[k].feature_dim if k in self.obs_nets else int(torch.Size(self.shapes[k]).numel())
            for k in self.keys
        )

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        features = []
        for key in self.keys:
            value = obs[key]
            features.append(self.obs_nets[key](value) if key in self.obs_nets else value.flatten(1))
        return torch.cat(features, dim=-1)
