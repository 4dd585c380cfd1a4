"""Configuration of a Diffusion Policy: shapes, network size and noise schedule.

Saved verbatim inside every checkpoint so a file alone rebuilds its policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from policy_accel.samplers.solvers import DEFAULT_NOISE_SCHEDULER


def _reject_unknown(cls: type, values: Mapping[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {where} keys {unknown}; known: {sorted(known)}")


@dataclass
class UnetConfig:
    """Sizes of :class:`~policy_accel.model.ConditionalUnet1D` (Diffusion Policy's PushT
    uses down_dims 256/512/1024; the CPU-trained teacher uses a narrower net)."""

    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    n_groups: int = 8
    diffusion_step_embed_dim: int = 128
    cond_predict_scale: bool = True

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "UnetConfig":
        _reject_unknown(cls, values, "unet config")
        values = dict(values)
        if "down_dims" in values:
            values["down_dims"] = tuple(int(d) for d in values["down_dims"])
        return cls(**values)


@dataclass
class DiffusionPolicyConfig:
    """Shapes follow Diffusion Policy's PushT: 2 observations in, 16 actions predicted,
    8 executed before re-planning."""

    obs_type: str = "keypoints"
    obs_dim: int = 20
    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    unet: UnetConfig = field(default_factory=UnetConfig)
    noise_scheduler: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NOISE_SCHEDULER))

    def __post_init__(self) -> None:
        if min(self.obs_dim, self.action_dim, self.horizon, self.n_obs_steps, self.n_action_steps) < 1:
            raise ValueError(f"all policy dimensions must be >= 1: {self}")
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"horizon {self.horizon} must cover n_obs_steps - 1 + n_action_steps "
                f"= {self.n_obs_steps - 1 + self.n_action_steps}")
        downsample = 2 ** (len(self.unet.down_dims) - 1)
        if self.horizon % downsample:
            raise ValueError(f"horizon {self.horizon} must be divisible by {downsample} for "
                             f"{len(self.unet.down_dims)} U-Net levels")

    @property
    def global_cond_dim(self) -> int:
        return self.obs_dim * self.n_obs_steps

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["unet"]["down_dims"] = list(self.unet.down_dims)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "DiffusionPolicyConfig":
        _reject_unknown(cls, values, "policy config")
        values = dict(values)
        if "unet" in values and not isinstance(values["unet"], UnetConfig):
            values["unet"] = UnetConfig.from_dict(values["unet"])
        if "noise_scheduler" in values:
            values["noise_scheduler"] = {**DEFAULT_NOISE_SCHEDULER, **dict(values["noise_scheduler"])}
        return cls(**values)
