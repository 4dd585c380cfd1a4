"""LeRobot's Diffusion Policy observation encoder (``DiffusionRgbEncoder`` + ``_prepare_global_conditioning``).

Per image (eval mode): optional resize (torchvision's bilinear, antialiased) -> optional centre crop
(torchvision's ``CenterCrop`` offsets, ``round((H - h) / 2)``, which differ from a floor by one pixel for
odd margins) -> ResNet-18 trunk (:mod:`policy_accel.model.resnet`, GroupNorm or eval BatchNorm) ->
spatial softmax (1x1 conv to K maps, softmax over positions, expected ``(x, y)`` against the saved
``pos_grid``) -> Linear(2K, 2K) -> ReLU. Module names follow LeRobot's, so ``diffusion.rgb_encoder.*``
weights load with only their prefix changed.

One frame's conditioning is ``[state, camera 0 features, camera 1 features, ..., environment state]``,
each observation normalised the LeRobot way first (:mod:`policy_accel.formats.lerobot.normalizer`).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policy_accel.formats.lerobot.normalizer import LeRobotFeatureNormalizer
from policy_accel.model.builders import build_checked_encoder
from policy_accel.model.config import DiffusionPolicyConfig
from policy_accel.model.resnet import RESNET18_OUT_CHANNELS, resnet18_trunk
from policy_accel.model.robomimic_encoder import resnet18_output_hw


def torchvision_center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Centre crop ``(..., H, W)`` with torchvision's offsets (``int(round((H - height) / 2))``)."""
    h, w = images.shape[-2:]
    if height > h or width > w:
        raise ValueError(f"crop {height}x{width} is larger than the image {h}x{w}")
    top, left = int(round((h - height) / 2.0)), int(round((w - width) / 2.0))
    return images[..., top : top + height, left : left + width]


def torchvision_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``torchvision.transforms.Resize((h, w))`` on float tensors: bilinear, antialiased, no corner alignment."""
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


class LeRobotSpatialSoftmax(nn.Module):
    """``(N, C, H, W) -> (N, K, 2)`` keypoints; ``pos_grid`` (H*W, 2) is x-major like LeRobot's numpy grid."""

    def __init__(self, in_channels: int, height: int, width: int, num_kp: int) -> None:
        super().__init__()
        self.height, self.width, self.num_kp = height, width, num_kp
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        pos_x, pos_y = np.meshgrid(np.linspace(-1.0, 1.0, width), np.linspace(-1.0, 1.0, height))
        grid = np.stack([pos_x.reshape(-1), pos_y.reshape(-1)], axis=1)
        self.register_buffer("pos_grid", torch.from_numpy(grid).float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.nets(features).reshape(-1, self.height * self.width)
        return (torch.softmax(maps, dim=-1) @ self.pos_grid).view(-1, self.num_kp, 2)


class LeRobotRgbEncoder(nn.Module):
    """One camera image ``(N, C, H, W)`` in [0, 1] (already normalised) -> ``(N, 2K)`` features."""

    def __init__(
        self,
        image_shape: Sequence[int],
        crop_shape: Sequence[int] | None = None,
        resize_shape: Sequence[int] | None = None,
        num_keypoints: int = 32,
        group_norm: bool = True,
    ) -> None:
        super().__init__()
        channels, height, width = (int(d) for d in image_shape)
        self.resize = tuple(int(d) for d in resize_shape) if resize_shape is not None else None
        self.crop = tuple(int(d) for d in crop_shape) if crop_shape is not None else None
        in_hw = self.crop or self.resize or (height, width)
        self.backbone = resnet18_trunk(group_norm=group_norm, in_channels=channels)
        self.pool = LeRobotSpatialSoftmax(RESNET18_OUT_CHANNELS, *resnet18_output_hw(*in_hw), num_kp=num_keypoints)
        self.feature_dim = 2 * num_keypoints
        self.out = nn.Linear(self.feature_dim, self.feature_dim)

    def keypoints(self, images: torch.Tensor) -> torch.Tensor:
        """The spatial-softmax keypoints ``(N, K, 2)`` (before the linear layer)."""
        if self.resize is not None:
            images = torchvision_resize(images, *self.resize)
        if self.crop is not None:
            images = torchvision_center_crop(images, *self.crop)
        return self.pool(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.out(self.keypoints(images).flatten(1)))


ENCODER_OPTIONS = (
    "state_key",
    "image_keys",
    "env_state_key",
    "crop_shape",
    "resize_shape",
    "num_keypoints",
    "group_norm",
    "separate_per_camera",
    "normalize",
    "eps",
)


class LeRobotObsEncoder(nn.Module):
    """``{feature: (N, *shape)}`` in env units -> ``(N, obs_dim)``: LeRobot's normalisation, then one frame's
    ``[state, image features per camera, environment state]``.

    ``normalize`` maps a feature to ``{"mode": MEAN_STD|MIN_MAX|QUANTILES|QUANTILE10, "shape": stats shape}``;
    features it leaves out enter unchanged (LeRobot's IDENTITY, e.g. the ENV quirk). Stats are buffers
    (``normalizers.<i>.<stat>``, in ``normalize`` order), filled by ``load_state_dict``."""

    def __init__(
        self,
        obs_shapes: Mapping[str, Mapping[str, Any]],
        state_key: str,
        image_keys: Sequence[str] = (),
        env_state_key: str | None = None,
        crop_shape: Sequence[int] | None = None,
        resize_shape: Sequence[int] | None = None,
        num_keypoints: int = 32,
        group_norm: bool = True,
        separate_per_camera: bool = False,
        normalize: Mapping[str, Mapping[str, Any]] | None = None,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.state_key, self.image_keys, self.env_state_key = state_key, list(image_keys), env_state_key
        self.shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in obs_shapes.items()}
        normalize = dict(normalize or {})
        self.norm_keys = list(normalize)
        self.normalizers = nn.ModuleList(
            [LeRobotFeatureNormalizer(spec["mode"], spec["shape"], eps) for spec in normalize.values()]
        )
        self.rgb_encoder: nn.Module | None = None
        feature_dim = 0
        if self.image_keys:
            image_shape = self.shapes[self.image_keys[0]]

            def make() -> LeRobotRgbEncoder:
                return LeRobotRgbEncoder(image_shape, crop_shape, resize_shape, num_keypoints, group_norm)

            self.rgb_encoder = nn.ModuleList([make() for _ in self.image_keys]) if separate_per_camera else make()
            feature_dim = 2 * num_keypoints * len(self.image_keys)
        self.separate_per_camera = bool(separate_per_camera)
        self.feature_dim = (
            self.shapes[state_key][0] + feature_dim + (self.shapes[env_state_key][0] if env_state_key else 0)
        )

    def normalized(self, obs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What LeRobot's pre-processor hands the model: every observed feature, normalised by its mode."""
        out = dict(obs)
        for key, normalizer in zip(self.norm_keys, self.normalizers):
            if key in out:
                out[key] = normalizer.normalize(out[key])
        return out

    def image_features(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Normalised images ``{camera: (N, C, H, W)}`` -> ``(N, cameras * 2K)``, cameras concatenated in order."""
        assert self.rgb_encoder is not None
        if self.separate_per_camera:
            parts = [encoder(obs[key]) for encoder, key in zip(self.rgb_encoder, self.image_keys)]
            return torch.cat(parts, dim=-1)
        stacked = torch.stack([obs[key] for key in self.image_keys], dim=1)  # (N, cameras, C, H, W)
        features = self.rgb_encoder(stacked.flatten(0, 1))
        return features.reshape(stacked.shape[0], -1)

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        obs = self.normalized(obs)
        parts = [obs[self.state_key]]
        if self.image_keys:
            parts.append(self.image_features(obs))
        if self.env_state_key:
            parts.append(obs[self.env_state_key])
        return torch.cat(parts, dim=-1)


def build_lerobot_encoder(config: DiffusionPolicyConfig) -> nn.Module:
    """The encoder a config with ``obs_encoder["type"] == "lerobot"`` names (registered by the package)."""
    return build_checked_encoder(config, LeRobotObsEncoder, ENCODER_OPTIONS, "LeRobot")
