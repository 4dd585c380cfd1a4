"""Configuration of a Diffusion Policy: shapes, network size and noise schedule.

Saved verbatim inside every checkpoint so a file alone rebuilds its policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

# The training noise schedule of the project's policies (Diffusion Policy's PushT defaults); the
# samplers rebuild every solver from a policy's copy of it.
DEFAULT_NOISE_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 100,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}


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
    def from_dict(cls, values: Mapping[str, Any]) -> UnetConfig:
        _reject_unknown(cls, values, "unet config")
        values = dict(values)
        if "down_dims" in values:
            values["down_dims"] = tuple(int(d) for d in values["down_dims"])
        return cls(**values)


@dataclass
class TransformerConfig:
    """Sizes of :class:`~policy_accel.model.transformer_for_diffusion.TransformerForDiffusion`
    (Diffusion Policy's obs-as-condition variant: time and observation frames are memory tokens)."""

    n_layer: int = 8
    n_head: int = 4
    n_emb: int = 256
    p_drop_emb: float = 0.0
    p_drop_attn: float = 0.3
    causal_attn: bool = True
    n_cond_layers: int = 0

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TransformerConfig:
        _reject_unknown(cls, values, "transformer config")
        return cls(**dict(values))


OBS_KEY_TYPES = ("low_dim", "rgb")


@dataclass
class DiffusionPolicyConfig:
    """Shapes follow Diffusion Policy's PushT: 2 observations in, 16 actions predicted,
    8 executed before re-planning.

    ``obs_dim`` is the width of one frame's conditioning: the observation size of an array
    policy, the observation encoder's feature size of a dict policy (``obs_shapes`` set). Dict
    policies name their keys in ``obs_shapes`` (``{key: {"shape": [...], "type": "rgb"|"low_dim"}}``,
    in the encoder's feature order) and an ``obs_encoder`` spec (``{"type": "robomimic", ...}``,
    see :mod:`policy_accel.model.builders`). ``normalizer`` is the normaliser's field layout
    (``None``: min/max ``obs`` and ``action``). ``action_start`` is the chunk index of the first
    executed action (``None``: ``n_obs_steps - 1``, Diffusion Policy's alignment)."""

    obs_type: str = "keypoints"
    obs_dim: int = 20
    action_dim: int = 2
    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8
    unet: UnetConfig = field(default_factory=UnetConfig)
    noise_scheduler: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NOISE_SCHEDULER))
    network: str = "unet"
    transformer: TransformerConfig | None = None
    obs_shapes: dict[str, dict[str, Any]] | None = None
    obs_encoder: dict[str, Any] | None = None
    normalizer: dict[str, dict[str, Any]] | None = None
    action_start: int | None = None

    def __post_init__(self) -> None:
        if min(self.obs_dim, self.action_dim, self.horizon, self.n_obs_steps, self.n_action_steps) < 1:
            raise ValueError(f"all policy dimensions must be >= 1: {self}")
        if self.network == "transformer" and self.transformer is None:
            raise ValueError("network 'transformer' needs a transformer config")
        if self.action_start is not None and not 0 <= self.action_start < self.horizon:
            raise ValueError(f"action_start {self.action_start} must lie in [0, horizon {self.horizon})")
        if self.first_action + self.n_action_steps > self.horizon:
            raise ValueError(
                f"horizon {self.horizon} must cover the executed actions {self.first_action} .. "
                f"{self.first_action + self.n_action_steps - 1} (n_obs_steps - 1 + n_action_steps)"
            )
        if self.obs_shapes is not None:
            for key, entry in self.obs_shapes.items():
                if entry.get("type") not in OBS_KEY_TYPES or not list(entry.get("shape", [])):
                    raise ValueError(
                        f"observation key '{key}': need a non-empty shape and a type in "
                        f"{list(OBS_KEY_TYPES)}, got {dict(entry)}"
                    )
        if self.network != "unet":
            return
        downsample = 2 ** (len(self.unet.down_dims) - 1)
        if self.horizon % downsample:
            raise ValueError(
                f"horizon {self.horizon} must be divisible by {downsample} for {len(self.unet.down_dims)} U-Net levels"
            )

    @property
    def global_cond_dim(self) -> int:
        return self.obs_dim * self.n_obs_steps

    @property
    def first_action(self) -> int:
        """Chunk index of the first executed action."""
        return self.n_obs_steps - 1 if self.action_start is None else self.action_start

    @property
    def dict_obs(self) -> bool:
        """Observations are dicts keyed by ``obs_shapes`` (else one flat array of ``obs_dim``)."""
        return self.obs_shapes is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["unet"]["down_dims"] = list(self.unet.down_dims)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DiffusionPolicyConfig:
        _reject_unknown(cls, values, "policy config")
        values = dict(values)
        if "unet" in values and not isinstance(values["unet"], UnetConfig):
            values["unet"] = UnetConfig.from_dict(values["unet"])
        if values.get("transformer") is not None and not isinstance(values["transformer"], TransformerConfig):
            values["transformer"] = TransformerConfig.from_dict(values["transformer"])
        if "noise_scheduler" in values:
            values["noise_scheduler"] = {**DEFAULT_NOISE_SCHEDULER, **dict(values["noise_scheduler"])}
        return cls(**values)
