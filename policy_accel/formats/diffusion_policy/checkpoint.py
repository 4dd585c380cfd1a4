"""Diffusion Policy workspace checkpoints (``.ckpt``) read into what the project's policy is built from.

Everything comes from the file: the training config (policy type, network sizes, ``n_obs_steps``,
``horizon``, ``n_action_steps``, the observation/action alignment, the noise scheduler, the
``shape_meta`` of image policies), the ``LinearNormalizer`` scale/offset, and the weights DP itself
evaluates with (``ema_model`` when ``training.use_ema``). A policy type or option this project does
not reproduce is refused by name rather than approximated. The pickle is read through
:mod:`policy_accel.formats.diffusion_policy.safe_pickle`, so no code named by the file ever runs.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from policy_accel.data.normalizer import AffineFieldNormalizer, Normalizer
from policy_accel.formats.base import CheckpointFormat, LoadedCheckpoint, file_head
from policy_accel.formats.diffusion_policy.safe_pickle import UnsafePickleError, safe_torch_load
from policy_accel.model.checkpoint_io import CheckpointError
from policy_accel.model.config import DiffusionPolicyConfig, TransformerConfig, UnetConfig

UNET_LOWDIM = "DiffusionUnetLowdimPolicy"
TRANSFORMER_LOWDIM = "DiffusionTransformerLowdimPolicy"
UNET_HYBRID = "DiffusionUnetHybridImagePolicy"
SUPPORTED_POLICIES = (UNET_LOWDIM, TRANSFORMER_LOWDIM, UNET_HYBRID)
_SCHEDULER_KEYS = {
    "DDPMScheduler": (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "variance_type",
        "clip_sample",
        "prediction_type",
        "clip_sample_range",
    ),
    "DDIMScheduler": (
        "num_train_timesteps",
        "beta_start",
        "beta_end",
        "beta_schedule",
        "clip_sample",
        "prediction_type",
        "clip_sample_range",
        "set_alpha_to_one",
        "steps_offset",
    ),
}
# scheduler options whose DP default is what the samplers here implement; any other value is refused
_SCHEDULER_FIXED = {
    "variance_type": "fixed_small",
    "prediction_type": "epsilon",
    "trained_betas": None,
    "thresholding": False,
    "rescale_betas_zero_snr": False,
}


class UnsupportedCheckpointError(CheckpointError):
    """A valid Diffusion Policy checkpoint of a policy type or option this project does not support."""


def is_pickle_checkpoint(path: str | Path) -> bool:
    """A torch zip archive or a raw pickle (protocol >= 2), as opposed to a safetensors file."""
    head = file_head(Path(path), 4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_dp_payload(path: str | Path) -> dict[str, Any]:
    """The workspace payload ``{"cfg": plain dict, "state_dicts": {...}}`` of a DP ``.ckpt``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}'")
    try:
        payload = safe_torch_load(path)
    except UnsafePickleError as exc:
        raise CheckpointError(f"'{path}' is not a safe Diffusion Policy checkpoint: {exc}") from exc
    except (
        RuntimeError,
        EOFError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        AttributeError,
        KeyError,
        IndexError,
        TypeError,
    ) as exc:
        raise CheckpointError(
            f"'{path}' is not a readable Diffusion Policy checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(payload, Mapping) or "cfg" not in payload or "state_dicts" not in payload:
        keys = sorted(payload) if isinstance(payload, Mapping) else type(payload).__name__
        raise CheckpointError(
            f"'{path}' is not a Diffusion Policy workspace checkpoint (expected keys 'cfg' and "
            f"'state_dicts', found {keys})"
        )
    from omegaconf import DictConfig, OmegaConf

    cfg = payload["cfg"]
    try:
        cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    except Exception as exc:  # omegaconf raises many types for unresolvable interpolations
        raise CheckpointError(f"'{path}': its config does not resolve: {exc}") from exc
    return {"cfg": cfg, "state_dicts": payload["state_dicts"]}


def _class_name(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "<no _target_>"


def _require(policy_cfg: Mapping[str, Any], key: str, value: Any, name: str) -> None:
    if key in policy_cfg and policy_cfg[key] != value:
        raise UnsupportedCheckpointError(
            f"{name} with {key}={policy_cfg[key]!r} is not supported (only {key}={value!r})"
        )


def _noise_scheduler(spec: Mapping[str, Any]) -> dict[str, Any]:
    kind = _class_name(spec.get("_target_"))
    if kind not in _SCHEDULER_KEYS:
        raise UnsupportedCheckpointError(f"noise scheduler '{kind}' is not supported (DDPMScheduler, DDIMScheduler)")
    for key, value in _SCHEDULER_FIXED.items():
        if key in spec and spec[key] != value:
            raise UnsupportedCheckpointError(
                f"noise scheduler option {key}={spec[key]!r} is not supported (only {value!r})"
            )
    out = {k: spec[k] for k in _SCHEDULER_KEYS[kind] if k in spec}
    if kind == "DDIMScheduler":  # DP's DDIM: diffusers' "leading" spacing (the only one in 0.11.1)
        out.setdefault("set_alpha_to_one", True)
        out.setdefault("steps_offset", 0)
        out["timestep_spacing"] = "leading"
    return out


def _normalizer(state: Mapping[str, torch.Tensor], fields: list[str]) -> Normalizer:
    out = {}
    for name in fields:
        prefix = f"normalizer.params_dict.{name}."
        if prefix + "scale" not in state or prefix + "offset" not in state:
            raise CheckpointError(f"the checkpoint's normaliser has no '{name}' entry ({prefix}scale/offset)")
        out[name] = AffineFieldNormalizer(state[prefix + "scale"], state[prefix + "offset"])
    return Normalizer(out)


def _unet_config(model: Mapping[str, Any]) -> UnetConfig:
    return UnetConfig(
        down_dims=tuple(int(d) for d in model.get("down_dims", (256, 512, 1024))),
        kernel_size=int(model.get("kernel_size", 5)),
        n_groups=int(model.get("n_groups", 8)),
        diffusion_step_embed_dim=int(model.get("diffusion_step_embed_dim", 256)),
        cond_predict_scale=bool(model.get("cond_predict_scale", False)),
    )


def _alignment(cfg: Mapping[str, Any], pc: Mapping[str, Any], oa_convention: bool) -> dict[str, int]:
    """First executed chunk index and count, DP's way (its runners drop ``n_latency_steps`` actions)."""
    n_obs = int(pc["n_obs_steps"])
    latency = int(cfg.get("n_latency_steps", 0) or 0)
    n_action = int(pc["n_action_steps"]) - latency
    if n_action < 1:
        raise UnsupportedCheckpointError(
            f"n_action_steps {pc['n_action_steps']} leaves no action after n_latency_steps {latency}"
        )
    return {"action_start": (n_obs - 1 if oa_convention else n_obs) + latency, "n_action_steps": n_action}


def _policy_config(
    cfg: Mapping[str, Any], kind: str, state: Mapping[str, torch.Tensor]
) -> tuple[DiffusionPolicyConfig, list[str]]:
    pc = cfg["policy"]
    task = str(cfg.get("task_name") or (cfg.get("task") or {}).get("name") or "")
    if cfg.get("past_action_visible"):
        raise UnsupportedCheckpointError("past_action_visible=True (past actions as condition) is not supported")
    _require(pc, "pred_action_steps_only", False, kind)
    common = dict(
        horizon=int(pc["horizon"]),
        n_obs_steps=int(pc["n_obs_steps"]),
        noise_scheduler=_noise_scheduler(pc["noise_scheduler"]),
    )
    if kind in (UNET_LOWDIM, TRANSFORMER_LOWDIM):
        obs_dim, action_dim = int(pc["obs_dim"]), int(pc["action_dim"])
        obs_type = "keypoints" if task.startswith("pusht") else task or "lowdim"
        model = pc["model"]
        if kind == UNET_LOWDIM:
            _require(pc, "obs_as_global_cond", True, kind)
            _require(pc, "obs_as_local_cond", False, kind)
            if model.get("local_cond_dim") is not None:
                raise UnsupportedCheckpointError(f"{kind} with a local_cond_dim is not supported")
            if int(model.get("global_cond_dim") or 0) != obs_dim * common["n_obs_steps"]:
                raise UnsupportedCheckpointError(
                    f"{kind}: global_cond_dim {model.get('global_cond_dim')} is not obs_dim * n_obs_steps"
                )
            net = dict(network="unet", unet=_unet_config(model))
            align = _alignment(cfg, pc, bool(pc.get("oa_step_convention", False)))
        else:
            _require(pc, "obs_as_cond", True, kind)
            _require(model, "time_as_cond", True, kind)
            if int(model.get("cond_dim") or 0) != obs_dim:
                raise UnsupportedCheckpointError(f"{kind}: cond_dim {model.get('cond_dim')} is not obs_dim {obs_dim}")
            if int(model.get("n_obs_steps") or common["horizon"]) != common["n_obs_steps"]:
                raise UnsupportedCheckpointError(f"{kind}: the network's n_obs_steps differs from the policy's")
            tf = TransformerConfig(
                **{
                    k: model[k]
                    for k in ("n_layer", "n_head", "n_emb", "p_drop_emb", "p_drop_attn", "causal_attn", "n_cond_layers")
                    if k in model
                }
            )
            net = dict(network="transformer", transformer=tf)
            align = _alignment(cfg, pc, True)  # DP's transformer policy always starts at n_obs_steps - 1
        fields = ["obs", "action"]
        config = DiffusionPolicyConfig(
            obs_type=obs_type, obs_dim=obs_dim, action_dim=action_dim, **common, **net, **align, normalizer=None
        )
        return config, fields
    # hybrid image U-Net
    _require(pc, "obs_as_global_cond", True, kind)
    shape_meta = pc["shape_meta"]
    obs_shapes: dict[str, dict[str, Any]] = {}
    for key, entry in shape_meta["obs"].items():
        kind_of = entry.get("type", "low_dim")
        if kind_of not in ("rgb", "low_dim"):
            raise UnsupportedCheckpointError(f"observation '{key}' of type '{kind_of}' is not supported (rgb, low_dim)")
        obs_shapes[key] = {"shape": [int(d) for d in entry["shape"]], "type": kind_of}
    action_shape = [int(d) for d in shape_meta["action"]["shape"]]
    if len(action_shape) != 1:
        raise UnsupportedCheckpointError(f"action shape {action_shape} is not supported (1-D actions only)")
    crop = pc.get("crop_shape")
    if crop is not None and not pc.get("eval_fixed_crop", False):
        raise UnsupportedCheckpointError("eval_fixed_crop=False (random crops at evaluation) is not supported")
    rgb = [k for k, v in obs_shapes.items() if v["type"] == "rgb"]
    if not rgb:
        raise UnsupportedCheckpointError(f"{kind} without an rgb observation is not supported")
    first = f"obs_encoder.obs_nets.{rgb[0]}."
    try:
        num_kp = int(state[first + "pool.nets.weight"].shape[0])
        feature_dim = int(state[first + "nets.3.weight"].shape[0])
    except KeyError as exc:
        raise UnsupportedCheckpointError(
            f"{kind}: the image encoder is not robomimic's ResNet-18 + SpatialSoftmax + Linear (missing {exc})"
        ) from None
    obs_dim = sum(
        feature_dim if v["type"] == "rgb" else int(torch.Size(v["shape"]).numel()) for v in obs_shapes.values()
    )
    encoder = {
        "type": "robomimic",
        "crop_shape": [int(d) for d in crop] if crop is not None else None,
        "num_kp": num_kp,
        "feature_dim": feature_dim,
        "group_norm": bool(pc.get("obs_encoder_group_norm", False)),
    }
    unet = _unet_config({**pc, "down_dims": pc.get("down_dims", (256, 512, 1024))})
    fields = ["action", *obs_shapes]
    obs_type = "pixels_agent_pos" if task.startswith("pusht") else task or "image"
    config = DiffusionPolicyConfig(
        obs_type=obs_type,
        obs_dim=obs_dim,
        action_dim=action_shape[0],
        **common,
        network="unet",
        unet=unet,
        obs_shapes=obs_shapes,
        obs_encoder=encoder,
        **_alignment(cfg, pc, True),
    )
    return config, fields


def _map_key(key: str) -> str | None:
    """DP state-dict key -> this project's (None: drop). robomimic registers its trunk and pool twice
    (``backbone``/``nets.0``, ``pool``/``nets.1``); the project keeps one copy."""
    if key.endswith("_dummy_variable") or key.startswith("mask_generator.") or ".input_stats." in key:
        return None
    if key.startswith("normalizer.params_dict."):
        return "normalizer.fields." + key[len("normalizer.params_dict.") :]
    if key.startswith("obs_encoder.obs_nets."):
        head, _, rest = key[len("obs_encoder.obs_nets.") :].partition(".")
        prefix = f"obs_encoder.obs_nets.{head}."
        if rest.startswith("backbone.nets."):
            return prefix + "backbone." + rest[len("backbone.nets.") :]
        if rest.startswith(("nets.0.", "nets.1.")):
            return None
        if rest.startswith("nets.3."):
            return prefix + "linear." + rest[len("nets.3.") :]
    return key


def _check_masks(policy: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """DP stores the transformer's attention masks; they must be the ones its sizes imply."""
    for name in ("mask", "memory_mask"):
        mine = getattr(policy.model, name, None)
        theirs = state.get(f"model.{name}")
        if (mine is None) != (theirs is None) or (mine is not None and not torch.equal(mine, theirs.float())):
            raise UnsupportedCheckpointError(
                f"{source}: the transformer's stored model.{name} is not the causal mask its config implies"
            )


_NON_PERSISTENT = ("model.mask", "model.memory_mask")


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = _map_key(key)
        if new is not None and new not in _NON_PERSISTENT:
            out[new] = value.detach().float().clone() if value.is_floating_point() else value.detach().clone()
    return out


def native_sampler(policy_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The sampler Diffusion Policy itself runs for this config: its scheduler class with its
    ``num_inference_steps`` (DDPM-100 for DP's published PushT policies)."""
    scheduler = policy_cfg["noise_scheduler"]
    kind = _class_name(scheduler.get("_target_"))
    steps = policy_cfg.get("num_inference_steps") or scheduler.get("num_train_timesteps", 100)
    return {"name": "ddim" if kind == "DDIMScheduler" else "ddpm", "num_steps": int(steps)}


def read_dp_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """A Diffusion Policy ``.ckpt`` read into the project's config, normaliser and DP's evaluation weights
    (``ema_model`` when ``training.use_ema``); its native sampler is what DP runs (:func:`native_sampler`)."""
    payload = read_dp_payload(path)
    cfg = payload["cfg"]
    try:
        policy_cfg = cfg["policy"]
        kind = _class_name(policy_cfg.get("_target_"))
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"'{path}' has no Diffusion Policy policy config (cfg.policy): {exc}") from exc
    if kind not in SUPPORTED_POLICIES:
        raise UnsupportedCheckpointError(
            f"'{path}': Diffusion Policy policy type '{kind}' is not supported "
            f"(supported: {', '.join(SUPPORTED_POLICIES)})"
        )
    use_ema = bool((cfg.get("training") or {}).get("use_ema", False))
    which = "ema_model" if use_ema else "model"
    state_dicts = payload["state_dicts"]
    if not isinstance(state_dicts, Mapping) or which not in state_dicts:
        found = sorted(state_dicts) if isinstance(state_dicts, Mapping) else type(state_dicts).__name__
        raise CheckpointError(
            f"'{path}': training.use_ema={use_ema}, so DP evaluates '{which}', which the file "
            f"lacks (state_dicts: {found})"
        )
    state = state_dicts[which]
    try:
        config, fields = _policy_config(cfg, kind, state)
    except UnsupportedCheckpointError as exc:
        raise UnsupportedCheckpointError(f"'{path}': {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"'{path}': cannot read its {kind} config: {type(exc).__name__}: {exc}") from exc
    normalizer = _normalizer(state, fields)
    config.normalizer = normalizer.spec()  # so a converted file rebuilds the same normaliser
    source = f"Diffusion Policy checkpoint '{path}' ({which})"
    check = None
    if config.network == "transformer":

        def check(policy: nn.Module) -> None:
            _check_masks(policy, state, source)

    return LoadedCheckpoint(
        config=config,
        state_dict=convert_state_dict(state),
        native_sampler=native_sampler(policy_cfg),
        source=source,
        format=DiffusionPolicyFormat.name,
        normalizer=normalizer,
        check_policy=check,
    )


class DiffusionPolicyFormat(CheckpointFormat):
    """DP's ``BaseWorkspace.save_checkpoint`` files: a torch zip archive or a raw pickle."""

    name = "Diffusion Policy .ckpt"

    def recognises(self, path: Path) -> bool:
        return path.is_file() and is_pickle_checkpoint(path)

    def read(self, path: Path) -> LoadedCheckpoint:
        return read_dp_checkpoint(path)
