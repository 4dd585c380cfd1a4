"""Build a policy's network and observation encoder from its config, by registered name.

A checkpoint stores only a config and tensors; these registries turn ``config.network`` and
``config.obs_encoder["type"]`` back into modules, so every saved policy (ours, converted Diffusion
Policy or LeRobot checkpoints) reloads from its file alone. Another format registers its own
builder with :func:`register_network` / :func:`register_obs_encoder` when its package is imported (this
module imports no format: :mod:`policy_accel.policy.diffusion_policy` imports :mod:`policy_accel.formats`,
so their builders are registered before a policy is built).

Protocols: a network is ``eps = net(x (N, T, action_dim), t (N,), cond (N, n_obs_steps * obs_dim))``;
an encoder is ``features = enc({key: (N, *shape)} normalised) -> (N, obs_dim)``, run once per frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

from torch import nn

if TYPE_CHECKING:
    from policy_accel.model.config import DiffusionPolicyConfig

NetworkBuilder = Callable[["DiffusionPolicyConfig"], nn.Module]
EncoderBuilder = Callable[["DiffusionPolicyConfig"], nn.Module]


def _unet(config: DiffusionPolicyConfig) -> nn.Module:
    from policy_accel.model.conditional_unet1d import ConditionalUnet1D

    unet = config.unet
    return ConditionalUnet1D(
        input_dim=config.action_dim,
        global_cond_dim=config.global_cond_dim,
        diffusion_step_embed_dim=unet.diffusion_step_embed_dim,
        down_dims=unet.down_dims,
        kernel_size=unet.kernel_size,
        n_groups=unet.n_groups,
        cond_predict_scale=unet.cond_predict_scale,
    )


def _transformer(config: DiffusionPolicyConfig) -> nn.Module:
    from dataclasses import asdict

    from policy_accel.model.transformer_for_diffusion import TransformerForDiffusion

    assert config.transformer is not None
    return TransformerForDiffusion(
        input_dim=config.action_dim,
        output_dim=config.action_dim,
        horizon=config.horizon,
        n_obs_steps=config.n_obs_steps,
        cond_dim=config.obs_dim,
        **asdict(config.transformer),
    )


def build_checked_encoder(
    config: DiffusionPolicyConfig, encoder_cls: Callable[..., nn.Module], options: Iterable[str], family: str
) -> nn.Module:
    """``encoder_cls(obs_shapes, **options)`` from ``config.obs_encoder``, refusing options it does not know
    by name and a feature size that is not the network's ``obs_dim`` (a saved file that does not fit fails here,
    not inside the first forward pass)."""
    spec = dict(config.obs_encoder or {})
    spec.pop("type", None)
    if unknown := sorted(set(spec) - set(options)):
        raise ValueError(f"unknown {family} encoder options {unknown}")
    encoder = encoder_cls(config.obs_shapes or {}, **spec)
    if encoder.feature_dim != config.obs_dim:
        raise ValueError(
            f"{family} observation encoder gives {encoder.feature_dim} features per frame but obs_dim "
            f"is {config.obs_dim}"
        )
    return encoder


def _robomimic(config: DiffusionPolicyConfig) -> nn.Module:
    from policy_accel.model.robomimic_encoder import RobomimicObsEncoder

    return build_checked_encoder(
        config, RobomimicObsEncoder, ("crop_shape", "num_kp", "feature_dim", "group_norm"), "robomimic"
    )


NETWORK_BUILDERS: dict[str, NetworkBuilder] = {"unet": _unet, "transformer": _transformer}
ENCODER_BUILDERS: dict[str, EncoderBuilder] = {"robomimic": _robomimic}


def register_network(name: str, builder: NetworkBuilder) -> None:
    """Make ``config.network == name`` build with ``builder``."""
    NETWORK_BUILDERS[name] = builder


def register_obs_encoder(name: str, builder: EncoderBuilder) -> None:
    """Make ``config.obs_encoder["type"] == name`` build with ``builder``."""
    ENCODER_BUILDERS[name] = builder


def build_network(config: DiffusionPolicyConfig) -> nn.Module:
    """The denoising network ``config.network`` names."""
    if config.network not in NETWORK_BUILDERS:
        raise ValueError(f"unknown network '{config.network}'; registered: {sorted(NETWORK_BUILDERS)}")
    return NETWORK_BUILDERS[config.network](config)


def build_obs_encoder(config: DiffusionPolicyConfig) -> nn.Module | None:
    """The encoder a dict policy's config names (``None`` for array policies)."""
    spec: dict[str, Any] | None = config.obs_encoder
    if spec is None:
        return None
    kind = spec.get("type")
    if kind not in ENCODER_BUILDERS:
        raise ValueError(f"unknown observation encoder type {kind!r}; registered: {sorted(ENCODER_BUILDERS)}")
    return ENCODER_BUILDERS[kind](config)
