"""LeRobot diffusion policy folders (``save_pretrained``'s ``pretrained_model/``) as project policies.

LeRobot pins an older torch than this project, so its format is read here directly:

- ``config.json``: ``DiffusionConfig``. Every field that changes inference is honoured (shapes, features,
  crop/resize, ResNet-18 with GroupNorm or eval BatchNorm, keypoints, per-camera encoders, U-Net sizes,
  FiLM, the noise schedule and both prediction types) or refused with an error naming it (another policy
  ``type``, a ``vision_backbone`` other than resnet18, PEFT adapters, unknown fields). Training-only
  fields (optimiser, ``crop_is_random``, ``pretrained_backbone_weights``, ...) are ignored: the weights are
  in ``model.safetensors``.
- ``model.safetensors``: ``diffusion.unet.*`` is the project's :class:`ConditionalUnet1D` (same computation,
  other module names) and ``diffusion.rgb_encoder.*`` the :class:`LeRobotObsEncoder`.
- ``policy_preprocessor.json`` / ``policy_postprocessor.json`` + their ``state_file``: LeRobot's
  normaliser and unnormaliser, applied exactly as LeRobot does (:mod:`policy_accel.formats.lerobot.normalizer`).

The policy built from it takes dict observations keyed by LeRobot's feature names
(:mod:`policy_accel.formats.lerobot.features`), so every sampler of the project (DDIM-k, Picard, deadline
mode) runs it; LeRobot's own scheduler is its native sampler (``sampler=None``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from policy_accel.data.normalizer import AffineFieldNormalizer, Normalizer
from policy_accel.formats.base import CheckpointFormat, LoadedCheckpoint
from policy_accel.formats.lerobot.features import ACTION_KEY, ENCODER_TYPE, ENV_STATE_KEY, LEROBOT_OBS_TYPE, STATE_KEY
from policy_accel.formats.lerobot.normalizer import (
    DEFAULT_EPS,
    MODE_STATS,
    NORM_MODES,
    LeRobotFeatureNormalizer,
    stats_shape,
)
from policy_accel.model.checkpoint_io import CheckpointError
from policy_accel.model.config import DiffusionPolicyConfig, UnetConfig

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
PREPROCESSOR_FILE, POSTPROCESSOR_FILE = "policy_preprocessor.json", "policy_postprocessor.json"

# DiffusionConfig fields with no effect on inference from saved weights (training, hub, runtime device)
INERT_FIELDS = frozenset(
    {
        "type",
        "device",
        "use_amp",
        "push_to_hub",
        "repo_id",
        "private",
        "tags",
        "license",
        "pretrained_path",
        "pretrained_revision",
        "drop_n_last_frames",
        "crop_is_random",
        "pretrained_backbone_weights",
        "compile_mode",
        "do_mask_loss_for_padding",
        "optimizer_lr",
        "optimizer_betas",
        "optimizer_eps",
        "optimizer_weight_decay",
        "scheduler_name",
        "scheduler_warmup_steps",
        "gradient_checkpointing",
        "policy_action_contract",
        "use_peft",
    }
)
HONOURED_FIELDS = frozenset(
    {
        "n_obs_steps",
        "horizon",
        "n_action_steps",
        "input_features",
        "output_features",
        "normalization_mapping",
        "vision_backbone",
        "resize_shape",
        "crop_ratio",
        "crop_shape",
        "use_group_norm",
        "spatial_softmax_num_keypoints",
        "use_separate_rgb_encoder_per_camera",
        "down_dims",
        "kernel_size",
        "n_groups",
        "diffusion_step_embed_dim",
        "use_film_scale_modulation",
        "noise_scheduler_type",
        "num_train_timesteps",
        "beta_schedule",
        "beta_start",
        "beta_end",
        "prediction_type",
        "clip_sample",
        "clip_sample_range",
        "num_inference_steps",
        "compile_model",
    }
)
# processor steps that leave values alone at inference (batching, device, key renaming before our dict keys)
PASSIVE_STEPS = frozenset({"rename_observations_processor", "to_batch_processor", "device_processor"})


class LeRobotCheckpointError(CheckpointError):
    """A LeRobot policy folder is incomplete, corrupt or uses an option this loader does not run."""


# ------------------------------------------------------------------ small readers
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LeRobotCheckpointError(f"LeRobot policy folder '{path.parent}' has no '{path.name}'")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LeRobotCheckpointError(f"'{path}' is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise LeRobotCheckpointError(f"'{path}' must hold a JSON object, got {type(value).__name__}")
    return value


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise LeRobotCheckpointError(f"LeRobot policy folder '{path.parent}' has no '{path.name}'")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise LeRobotCheckpointError(f"'{path}' is not a readable safetensors file: {exc}") from exc


def _field(raw: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = CONFIG_FILE) -> Any:
    if key not in raw:
        raise LeRobotCheckpointError(f"{where} has no '{key}'")
    value = raw[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise LeRobotCheckpointError(
            f"{where}: '{key}' must be {' or '.join(k.__name__ for k in kinds)}, got {value!r}"
        )
    return value


def _positive_int(raw: Mapping[str, Any], key: str) -> int:
    value = _field(raw, key, int)
    if value < 1:
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: '{key}' must be >= 1, got {value}")
    return value


def _int_pair(raw: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    value = raw.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: '{key}' must be null or two positive integers, got {value!r}")
    return int(value[0]), int(value[1])


def _features(raw: Mapping[str, Any], key: str, where: str = CONFIG_FILE) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{name: (TYPE, shape)}`` of ``input_features`` / ``output_features``, in file order."""
    value = _field(raw, key, dict, where)
    out = {}
    for name, entry in value.items():
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("type"), str)
            or not isinstance(entry.get("shape"), list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in entry["shape"])
        ):
            raise LeRobotCheckpointError(
                f'{where}: {key}[\'{name}\'] must be {{"type": str, "shape": [positive ints]}}, got {entry!r}'
            )
        out[name] = (entry["type"], tuple(entry["shape"]))
    return out


# ------------------------------------------------------------------ config.json
@dataclass
class LeRobotDiffusionSpec:
    """What of a ``DiffusionConfig`` inference depends on, validated."""

    n_obs_steps: int
    horizon: int
    n_action_steps: int
    state_dim: int
    image_keys: list[str]
    image_shape: tuple[int, int, int] | None
    env_state_dim: int | None
    action_dim: int
    feature_types: dict[str, str]
    normalization_mapping: dict[str, str]
    crop_shape: tuple[int, int] | None
    resize_shape: tuple[int, int] | None
    num_keypoints: int
    group_norm: bool
    separate_per_camera: bool
    unet: UnetConfig
    noise_scheduler: dict[str, Any]
    scheduler_type: str
    num_inference_steps: int | None

    @property
    def obs_shapes(self) -> dict[str, dict[str, Any]]:
        """The policy's observation keys in LeRobot's conditioning order: state, cameras, environment state."""
        shapes = {STATE_KEY: {"shape": [self.state_dim], "type": "low_dim"}}
        for key in self.image_keys:
            shapes[key] = {"shape": list(self.image_shape or ()), "type": "rgb"}
        if self.env_state_dim is not None:
            shapes[ENV_STATE_KEY] = {"shape": [self.env_state_dim], "type": "low_dim"}
        return shapes

    @property
    def obs_dim(self) -> int:
        return self.state_dim + 2 * self.num_keypoints * len(self.image_keys) + (self.env_state_dim or 0)

    def default_sampler(self) -> dict[str, Any]:
        """LeRobot's own inference: its scheduler type with ``num_inference_steps`` (None: every train step)."""
        steps = self.num_inference_steps or self.noise_scheduler["num_train_timesteps"]
        return {"name": self.scheduler_type.lower(), "num_steps": int(steps)}


def parse_lerobot_config(raw: Mapping[str, Any]) -> LeRobotDiffusionSpec:
    """Validate a LeRobot ``config.json``; every refusal names the field."""
    policy_type = raw.get("type")
    if policy_type != "diffusion":
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: policy type {policy_type!r} is not supported "
            "(this loader reads LeRobot 'diffusion' policies only)"
        )
    unknown = sorted(set(raw) - INERT_FIELDS - HONOURED_FIELDS)
    if unknown:
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: unsupported DiffusionConfig fields {unknown} (unknown to this "
            "loader, so their effect on inference cannot be reproduced)"
        )
    if raw.get("use_peft"):
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: 'use_peft' is true: PEFT adapter folders are not supported "
            "(merge the adapter into the weights and save the full policy)"
        )
    backbone = raw.get("vision_backbone", "resnet18")
    inputs, outputs = _features(raw, "input_features"), _features(raw, "output_features")
    images = {k: shape for k, (kind, shape) in inputs.items() if kind == "VISUAL"}
    if images and backbone != "resnet18":
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: vision_backbone {backbone!r} is not supported (only 'resnet18')")
    states = [k for k, (kind, _) in inputs.items() if kind == "STATE"]
    envs = [k for k, (kind, _) in inputs.items() if kind == "ENV"]
    others = sorted(k for k, (kind, _) in inputs.items() if kind not in ("VISUAL", "STATE", "ENV"))
    if others:
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: input_features {others} have types LeRobot's diffusion policy "
            "does not read (VISUAL, STATE, ENV)"
        )
    if states != [STATE_KEY]:
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: input_features must have exactly one STATE feature named '{STATE_KEY}', got {states}"
        )
    if envs not in ([], [ENV_STATE_KEY]):
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: the ENV input feature must be named '{ENV_STATE_KEY}', got {envs}"
        )
    if not images and not envs:
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: input_features need at least one VISUAL feature or '{ENV_STATE_KEY}'"
        )
    for key, shape in [(STATE_KEY, inputs[STATE_KEY][1]), *[(k, inputs[k][1]) for k in envs]]:
        if len(shape) != 1:
            raise LeRobotCheckpointError(f"{CONFIG_FILE}: input_features['{key}'] must be a vector, got shape {shape}")
    image_shape = None
    if images:
        shapes = set(images.values())
        if len(shapes) > 1:
            raise LeRobotCheckpointError(f"{CONFIG_FILE}: all VISUAL input_features must share one shape, got {images}")
        image_shape = next(iter(shapes))
        if len(image_shape) != 3:
            raise LeRobotCheckpointError(f"{CONFIG_FILE}: VISUAL features must be (C, H, W), got {image_shape}")
    if list(outputs) != [ACTION_KEY] or outputs[ACTION_KEY][0] != "ACTION" or len(outputs[ACTION_KEY][1]) != 1:
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: output_features must be exactly {{'{ACTION_KEY}': ACTION "
            f"vector}}, got {raw.get('output_features')}"
        )

    mapping = _field(raw, "normalization_mapping", dict)
    bad_modes = {k: v for k, v in mapping.items() if v not in NORM_MODES}
    if bad_modes:
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: normalization_mapping has unsupported modes {bad_modes} (supported: {list(NORM_MODES)})"
        )

    resize = _int_pair(raw, "resize_shape")
    crop = _int_pair(raw, "crop_shape")
    ratio = float(_field(raw, "crop_ratio", float)) if "crop_ratio" in raw else 1.0
    if not 0 < ratio <= 1:
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: 'crop_ratio' must lie in (0, 1], got {ratio}")
    if resize is not None:  # DiffusionConfig.__post_init__: resize + ratio decide the crop
        crop = (int(resize[0] * ratio), int(resize[1] * ratio)) if ratio < 1 else None
        if crop is not None and min(crop) < 1:
            raise LeRobotCheckpointError(f"{CONFIG_FILE}: crop_ratio {ratio} of resize_shape {resize} leaves no pixels")
    elif crop is not None and image_shape is not None and (crop[0] > image_shape[1] or crop[1] > image_shape[2]):
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: crop_shape {crop} does not fit the images {image_shape}")

    unet = UnetConfig(
        down_dims=tuple(int(d) for d in _field(raw, "down_dims", list)),
        kernel_size=_positive_int(raw, "kernel_size"),
        n_groups=_positive_int(raw, "n_groups"),
        diffusion_step_embed_dim=_positive_int(raw, "diffusion_step_embed_dim"),
        cond_predict_scale=bool(_field(raw, "use_film_scale_modulation", bool)),
    )
    scheduler_type = _field(raw, "noise_scheduler_type", str)
    if scheduler_type not in ("DDPM", "DDIM"):
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: noise_scheduler_type {scheduler_type!r} is not supported ('DDPM' or 'DDIM')"
        )
    prediction = _field(raw, "prediction_type", str)
    if prediction not in ("epsilon", "sample"):
        raise LeRobotCheckpointError(
            f"{CONFIG_FILE}: prediction_type {prediction!r} is not supported ('epsilon' or 'sample')"
        )
    clip_range = float(_field(raw, "clip_sample_range", float))
    if not (clip_range > 0 and math.isfinite(clip_range)):
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: 'clip_sample_range' must be positive, got {clip_range}")
    steps = raw.get("num_inference_steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
        raise LeRobotCheckpointError(f"{CONFIG_FILE}: 'num_inference_steps' must be null or >= 1, got {steps!r}")
    # diffusers' DDPMScheduler / DDIMScheduler as LeRobot builds them (their defaults elsewhere)
    noise_scheduler = {
        "num_train_timesteps": _positive_int(raw, "num_train_timesteps"),
        "beta_start": float(_field(raw, "beta_start", float)),
        "beta_end": float(_field(raw, "beta_end", float)),
        "beta_schedule": _field(raw, "beta_schedule", str),
        "variance_type": "fixed_small",
        "clip_sample": bool(_field(raw, "clip_sample", bool)),
        "clip_sample_range": clip_range,
        "prediction_type": prediction,
        "timestep_spacing": "leading",
        "set_alpha_to_one": True,
        "steps_offset": 0,
    }
    return LeRobotDiffusionSpec(
        n_obs_steps=_positive_int(raw, "n_obs_steps"),
        horizon=_positive_int(raw, "horizon"),
        n_action_steps=_positive_int(raw, "n_action_steps"),
        state_dim=inputs[STATE_KEY][1][0],
        image_keys=list(images),
        image_shape=image_shape,
        env_state_dim=inputs[ENV_STATE_KEY][1][0] if envs else None,
        action_dim=outputs[ACTION_KEY][1][0],
        feature_types={k: kind for k, (kind, _) in {**inputs, **outputs}.items()},
        normalization_mapping=dict(mapping),
        crop_shape=crop if images else None,
        resize_shape=resize if images else None,
        num_keypoints=_positive_int(raw, "spatial_softmax_num_keypoints") if images else 32,
        group_norm=bool(_field(raw, "use_group_norm", bool)) if images else True,
        separate_per_camera=bool(_field(raw, "use_separate_rgb_encoder_per_camera", bool)) if images else False,
        unet=unet,
        noise_scheduler=noise_scheduler,
        scheduler_type=scheduler_type,
        num_inference_steps=steps,
    )


# ------------------------------------------------------------------ processors
@dataclass
class NormalizerStep:
    """A normaliser / unnormaliser step of a processor pipeline, with its stats."""

    eps: float
    features: dict[str, tuple[str, tuple[int, ...]]]
    norm_map: dict[str, str]
    stats: dict[str, dict[str, torch.Tensor]]
    observation_keys: set[str] | None
    source: str


def read_normalizer_step(folder: Path, filename: str, step_name: str) -> NormalizerStep:
    """The ``step_name`` step of the pipeline in ``filename``; other steps must leave values alone."""
    pipeline = _read_json(folder / filename)
    steps = pipeline.get("steps")
    if not isinstance(steps, list):
        raise LeRobotCheckpointError(f"'{folder / filename}' has no list of 'steps'")
    names = [s.get("registry_name") or s.get("class") if isinstance(s, dict) else None for s in steps]
    found = [s for s, n in zip(steps, names) if n == step_name]
    unsupported = [n for n in names if n != step_name and n not in PASSIVE_STEPS]
    if unsupported:
        raise LeRobotCheckpointError(
            f"'{folder / filename}': processor steps {unsupported} are not supported "
            f"(supported: {step_name}, {sorted(PASSIVE_STEPS)})"
        )
    if len(found) != 1:
        raise LeRobotCheckpointError(
            f"'{folder / filename}' must have exactly one '{step_name}' step, found {len(found)}"
        )
    step, where = found[0], f"{filename} step '{step_name}'"
    config = step.get("config")
    if not isinstance(config, dict) or not isinstance(step.get("state_file"), str):
        raise LeRobotCheckpointError(f"{where} needs a 'config' object and a 'state_file'")
    features = _features(config, "features", where) if "features" in config else {}
    norm_map = config.get("norm_map") or {}
    if not isinstance(norm_map, dict) or any(v not in NORM_MODES for v in norm_map.values()):
        raise LeRobotCheckpointError(
            f"{where}: norm_map {norm_map!r} has unsupported modes (supported: {list(NORM_MODES)})"
        )
    keys = config.get("normalize_observation_keys")
    flat = _read_tensors(folder / step["state_file"])
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for flat_key, tensor in flat.items():
        feature, _, stat = flat_key.rpartition(".")
        stats.setdefault(feature, {})[stat] = tensor.float()
    eps = config.get("eps", DEFAULT_EPS)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise LeRobotCheckpointError(f"{where}: 'eps' must be a non-negative number, got {eps!r}")
    return NormalizerStep(
        eps=float(eps),
        features=features,
        norm_map=dict(norm_map),
        stats=stats,
        observation_keys=set(keys) if keys is not None else None,
        source=f"'{folder / step['state_file']}'",
    )


def _feature_normalizer(
    step: NormalizerStep, key: str, feature_shape: tuple[int, ...]
) -> LeRobotFeatureNormalizer | None:
    """The module that normalises ``key`` the way ``step`` does; ``None`` where LeRobot passes it through."""
    if key not in step.features or (
        step.observation_keys is not None and key != ACTION_KEY and key not in step.observation_keys
    ):
        return None
    kind = step.features[key][0]
    mode = step.norm_map.get(kind, "IDENTITY")
    if mode == "IDENTITY" or key not in step.stats:  # LeRobot: no mode or no stats -> unchanged
        return None
    needed = MODE_STATS[mode]
    missing = [s for s in needed if s not in step.stats[key]]
    if missing:
        raise LeRobotCheckpointError(f"{step.source}: {mode} normalisation of '{key}' needs stats {missing}")
    values = {s: step.stats[key][s].reshape(stats_shape(kind, feature_shape, step.stats[key][s].shape)) for s in needed}
    for name, value in values.items():
        try:
            fits = torch.broadcast_shapes(value.shape, feature_shape) == torch.Size(feature_shape)
        except RuntimeError:
            fits = False
        if not fits:
            raise LeRobotCheckpointError(
                f"{step.source}: stat '{key}.{name}' of shape {tuple(value.shape)} does not "
                f"fit the feature's shape {feature_shape}"
            )
    shape = values[needed[0]].shape
    return LeRobotFeatureNormalizer(mode, shape, step.eps, values)


# ------------------------------------------------------------------ weights
def _unet_key(key: str) -> str:
    """LeRobot's ``DiffusionConditionalUnet1d`` names -> :class:`ConditionalUnet1D`'s (same computation)."""
    parts = key.split(".")
    if parts[0] in ("down_modules", "up_modules") and len(parts) == 4 and parts[2] == "2":
        return ".".join([*parts[:3], "conv", parts[3]])  # the bare down/up-sampling conv
    return ".".join("blocks.0" if p == "conv1" else "blocks.1" if p == "conv2" else p for p in parts)


def map_weights(tensors: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """``DiffusionPolicy.state_dict()`` of LeRobot -> this project's policy keys (``model.*``, ``obs_encoder.*``)."""
    out, unexpected = {}, []
    for key, value in tensors.items():
        if key.startswith("diffusion.unet."):
            rest = key[len("diffusion.unet.") :]
            rest = rest[len("_orig_mod.") :] if rest.startswith("_orig_mod.") else rest  # saved after torch.compile
            out["model." + _unet_key(rest)] = value
        elif key.startswith("diffusion.rgb_encoder."):
            out["obs_encoder.rgb_encoder." + key[len("diffusion.rgb_encoder.") :]] = value
        else:
            unexpected.append(key)
    if unexpected:
        raise LeRobotCheckpointError(
            f"{source} has weights LeRobot's diffusion policy does not define: "
            f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    return out


# ------------------------------------------------------------------ project config
def policy_config(
    spec: LeRobotDiffusionSpec, normalize: Mapping[str, Mapping[str, Any]], eps: float, action_shape: list[int]
) -> DiffusionPolicyConfig:
    """The project config of a LeRobot policy (a saved copy rebuilds it through the encoder registry)."""
    encoder = {
        "type": ENCODER_TYPE,
        "state_key": STATE_KEY,
        "image_keys": spec.image_keys,
        "env_state_key": ENV_STATE_KEY if spec.env_state_dim is not None else None,
        "crop_shape": list(spec.crop_shape) if spec.crop_shape else None,
        "resize_shape": list(spec.resize_shape) if spec.resize_shape else None,
        "num_keypoints": spec.num_keypoints,
        "group_norm": spec.group_norm,
        "separate_per_camera": spec.separate_per_camera,
        "normalize": {k: dict(v) for k, v in normalize.items()},
        "eps": eps,
    }
    return DiffusionPolicyConfig(
        obs_type=LEROBOT_OBS_TYPE,
        obs_dim=spec.obs_dim,
        action_dim=spec.action_dim,
        horizon=spec.horizon,
        n_obs_steps=spec.n_obs_steps,
        n_action_steps=spec.n_action_steps,
        unet=spec.unet,
        noise_scheduler=dict(spec.noise_scheduler),
        obs_shapes=spec.obs_shapes,
        obs_encoder=encoder,
        normalizer={ACTION_KEY: {"kind": "affine", "shape": action_shape}},
    )


# ------------------------------------------------------------------ entry point
def read_lerobot_folder(path: str | Path) -> LoadedCheckpoint:
    """A LeRobot diffusion policy folder read into the project's config, normaliser and weights.

    Its native sampler is LeRobot's own inference (its ``noise_scheduler_type`` with ``num_inference_steps``).
    The policy takes dicts keyed by the folder's feature names in env units (images float in [0, 1], channels
    first)."""
    folder = Path(path)
    if not folder.is_dir():
        raise LeRobotCheckpointError(f"LeRobot policy folder not found: '{folder}'")
    raw = _read_json(folder / CONFIG_FILE)
    try:
        spec = parse_lerobot_config(raw)
    except LeRobotCheckpointError as exc:
        raise LeRobotCheckpointError(f"LeRobot policy '{folder}': {exc}") from None
    for name in (PREPROCESSOR_FILE, POSTPROCESSOR_FILE):
        if not (folder / name).is_file():
            raise LeRobotCheckpointError(
                f"LeRobot policy folder '{folder}' has no '{name}' (folders saved before LeRobot 0.4 keep their "
                "normalisation stats inside model.safetensors: convert them with LeRobot's "
                "migrate_policy_normalization script first)"
            )
    pre = read_normalizer_step(folder, PREPROCESSOR_FILE, "normalizer_processor")
    post = read_normalizer_step(folder, POSTPROCESSOR_FILE, "unnormalizer_processor")
    tensors = _read_tensors(folder / WEIGHTS_FILE)

    normalize: dict[str, dict[str, Any]] = {}
    buffers: dict[str, torch.Tensor] = {}
    for key, entry in spec.obs_shapes.items():  # the encoder keeps its normalisers in this order
        module = _feature_normalizer(pre, key, tuple(entry["shape"]))
        if module is not None:
            position = len(normalize)
            normalize[key] = {"mode": module.mode, "shape": list(getattr(module, module.low_name).shape)}
            buffers.update({f"obs_encoder.normalizers.{position}.{k}": v for k, v in module.state_dict().items()})
    action = _feature_normalizer(post, ACTION_KEY, (spec.action_dim,))
    if action is None:  # IDENTITY: LeRobot returns the network's output as the action
        scale, offset = torch.ones(spec.action_dim), torch.zeros(spec.action_dim)
    else:
        scale, offset = action.affine()
        scale, offset = scale.expand(spec.action_dim).clone(), offset.expand(spec.action_dim).clone()

    config_source = f"'{folder / CONFIG_FILE}'"
    try:
        config = policy_config(spec, normalize, pre.eps, [spec.action_dim])
        normalizer = Normalizer({ACTION_KEY: AffineFieldNormalizer(scale, offset)})
    except (ValueError, NotImplementedError) as exc:
        raise LeRobotCheckpointError(f"{config_source}: {exc}") from exc
    state = {
        **map_weights(tensors, f"'{folder / WEIGHTS_FILE}'"),
        **buffers,
        **{f"normalizer.{k}": v for k, v in normalizer.state_dict().items()},
    }
    return LoadedCheckpoint(
        config=config,
        state_dict=state,
        native_sampler=spec.default_sampler(),
        source=f"'{folder / WEIGHTS_FILE}'",
        format=LeRobotFormat.name,
        normalizer=normalizer,
        error_type=LeRobotCheckpointError,
        config_source=config_source,  # e.g. horizon vs executed actions, an unknown beta_schedule
        sampler_source=f"LeRobot policy '{folder}'",
    )


class LeRobotFormat(CheckpointFormat):
    """LeRobot's ``pretrained_model/`` folders. Every folder is claimed (the only folder format), so one that
    lacks a file gets an error naming it."""

    name = "LeRobot folder"

    def recognises(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, path: Path) -> LoadedCheckpoint:
        return read_lerobot_folder(path)
