"""Write small LeRobot-format policy folders (what ``save_pretrained`` writes) for the loader's tests.

The weights come from this project's own modules renamed to LeRobot's keys (the inverse of the
loader's mapping, written out here independently), randomly initialised and perturbed so that no
weight is 0 or 1; the stats are plausible per-feature ranges.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from helpers.paths import LEROBOT_FIXTURES
from policy_accel.formats.lerobot.rgb_encoder import LeRobotRgbEncoder
from policy_accel.model.conditional_unet1d import ConditionalUnet1D

FIXTURES = LEROBOT_FIXTURES

BASE_CONFIG: dict[str, Any] = {
    "type": "diffusion",
    "n_obs_steps": 2,
    "horizon": 16,
    "n_action_steps": 8,
    "normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"},
    "drop_n_last_frames": 7,
    "vision_backbone": "resnet18",
    "resize_shape": None,
    "crop_ratio": 1.0,
    "crop_shape": None,
    "crop_is_random": True,
    "pretrained_backbone_weights": None,
    "use_group_norm": True,
    "spatial_softmax_num_keypoints": 8,
    "use_separate_rgb_encoder_per_camera": False,
    "down_dims": [16, 32],
    "kernel_size": 3,
    "n_groups": 4,
    "diffusion_step_embed_dim": 16,
    "use_film_scale_modulation": True,
    "noise_scheduler_type": "DDIM",
    "num_train_timesteps": 100,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "num_inference_steps": 4,
    "compile_model": False,
    "device": "cpu",
    "use_amp": False,
    "push_to_hub": False,
    "optimizer_lr": 1e-4,
}


def lerobot_unet_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] in ("down_modules", "up_modules") and len(parts) == 5 and parts[3] == "conv":
        return ".".join([*parts[:3], parts[4]])
    return key.replace("blocks.0.", "conv1.").replace("blocks.1.", "conv2.")


def _perturbed(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in module.state_dict().items():
        if value.is_floating_point() and not key.endswith(("pos_grid", "running_mean", "running_var")):
            value = value + 0.05 * torch.randn(value.shape, generator=generator)
        elif key.endswith("running_var"):
            value = value + torch.rand(value.shape, generator=generator)
        out[key] = value.contiguous()
    return out


def write_policy_folder(
    folder: Path, inputs: dict[str, dict[str, Any]], action_dim: int = 2, seed: int = 0, **overrides: Any
) -> Path:
    """A LeRobot diffusion folder for ``inputs`` (``{name: {"type", "shape"}}``) with config ``overrides``."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        **copy.deepcopy(BASE_CONFIG),
        **overrides,
        "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [action_dim]}},
    }
    torch.manual_seed(seed)
    images = [k for k, v in inputs.items() if v["type"] == "VISUAL"]
    cond = sum(v["shape"][0] for v in inputs.values() if v["type"] in ("STATE", "ENV"))
    cond += 2 * config["spatial_softmax_num_keypoints"] * len(images)
    unet = ConditionalUnet1D(
        action_dim,
        cond * config["n_obs_steps"],
        config["diffusion_step_embed_dim"],
        config["down_dims"],
        config["kernel_size"],
        config["n_groups"],
        config["use_film_scale_modulation"],
    )
    prefix = "diffusion.unet._orig_mod." if config["compile_model"] else "diffusion.unet."
    weights = {prefix + lerobot_unet_key(k): v for k, v in _perturbed(unet, seed).items()}
    if images:
        shape = inputs[images[0]]["shape"]
        crop = config["crop_shape"]
        if config["resize_shape"] is not None:
            crop = [int(d * config["crop_ratio"]) for d in config["resize_shape"]] if config["crop_ratio"] < 1 else None
        count = len(images) if config["use_separate_rgb_encoder_per_camera"] else 1
        for i in range(count):
            encoder = LeRobotRgbEncoder(
                shape, crop, config["resize_shape"], config["spatial_softmax_num_keypoints"], config["use_group_norm"]
            )
            tag = (
                f"diffusion.rgb_encoder.{i}."
                if config["use_separate_rgb_encoder_per_camera"]
                else "diffusion.rgb_encoder."
            )
            weights.update({tag + k: v for k, v in _perturbed(encoder, seed + 1 + i).items()})
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    write_processors(folder, config)
    return folder


def feature_stats(kind: str, shape: list[int], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    if kind == "VISUAL":
        channels = shape[0]
        mean = 0.4 + 0.2 * torch.rand(channels, 1, 1, generator=generator)
        std = 0.1 + 0.1 * torch.rand(channels, 1, 1, generator=generator)
        low, high = torch.zeros(channels, 1, 1), torch.ones(channels, 1, 1)
    else:
        low = 10 + 50 * torch.rand(shape, generator=generator)
        high = low + 100 + 300 * torch.rand(shape, generator=generator)
        mean, std = (low + high) / 2, (high - low) / 4
    return {
        "min": low,
        "max": high,
        "mean": mean,
        "std": std,
        "count": torch.tensor([100.0]),
        "q01": low + 1,
        "q10": low + 10,
        "q50": mean.clone(),
        "q90": high - 10,
        "q99": high - 1,
    }


def write_processors(folder: Path, config: dict[str, Any]) -> None:
    features = {**config["input_features"], **config["output_features"]}
    stats = {}
    for i, (key, entry) in enumerate(features.items()):
        stats.update({f"{key}.{s}": v for s, v in feature_stats(entry["type"], entry["shape"], 100 + i).items()})
    stats.update({"index.min": torch.zeros(1), "index.max": torch.ones(1)})  # bookkeeping, ignored
    norm = {"eps": 1e-8, "features": features, "norm_map": config["normalization_mapping"]}
    pre = {
        "name": "policy_preprocessor",
        "steps": [
            {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
            {"registry_name": "to_batch_processor", "config": {}},
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
            {
                "registry_name": "normalizer_processor",
                "config": norm,
                "state_file": "policy_preprocessor_step_3_normalizer_processor.safetensors",
            },
        ],
    }
    post = {
        "name": "policy_postprocessor",
        "steps": [
            {
                "registry_name": "unnormalizer_processor",
                "config": {**norm, "features": dict(config["output_features"])},
                "state_file": "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
            },
            {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}},
        ],
    }
    for pipeline in (pre, post):
        step = next(s for s in pipeline["steps"] if "state_file" in s)
        save_file({k: v.contiguous() for k, v in stats.items()}, str(folder / step["state_file"]))
        (folder / f"{pipeline['name']}.json").write_text(json.dumps(pipeline, indent=2))


def state_obs(batch: int, dims: dict[str, list[int]], steps: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random observations ``(batch, steps, *shape)``: images in [0, 1], vectors in pixel-like units."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in dims.items():
        value = torch.rand((batch, steps, *shape), generator=generator)
        out[key] = value if len(shape) == 3 else 50 + 400 * value
    return out
