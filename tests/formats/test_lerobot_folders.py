"""LeRobot folders of other shapes and options load and run; broken folders and bad inputs fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.lerobot import state_obs, write_policy_folder

import policy_accel
from policy_accel.formats.lerobot.checkpoint import LeRobotCheckpointError
from policy_accel.formats.lerobot.normalizer import LeRobotFeatureNormalizer
from policy_accel.formats.lerobot.rgb_encoder import torchvision_center_crop
from policy_accel.model.checkpoint_io import CheckpointError
from policy_accel.policy.loading import load_policy
from policy_accel.samplers import SequentialSampler

STATE_ENV = {
    "observation.state": {"type": "STATE", "shape": [3]},
    "observation.environment_state": {"type": "ENV", "shape": [6]},
}


def _one_camera(shape=(3, 40, 48)) -> dict:
    return {
        "observation.image": {"type": "VISUAL", "shape": list(shape)},
        "observation.state": {"type": "STATE", "shape": [3]},
    }


def _dims(policy) -> dict:
    return {k: v["shape"] for k, v in policy.config.obs_shapes.items()}


@pytest.fixture(scope="module")
def state_folder(tmp_path_factory) -> Path:
    return write_policy_folder(
        tmp_path_factory.mktemp("lerobot") / "state",
        STATE_ENV,
        action_dim=4,
        horizon=8,
        n_obs_steps=3,
        n_action_steps=4,
    )


def test_other_shapes_load_and_run(tmp_path):
    folder = write_policy_folder(
        tmp_path / "img",
        _one_camera(),
        action_dim=4,
        horizon=8,
        n_obs_steps=3,
        n_action_steps=4,
        crop_shape=[32, 40],
        spatial_softmax_num_keypoints=8,
    )
    policy = policy_accel.load(folder, sampler="ddim-4")
    assert policy.config.obs_dim == 3 + 16 and policy.config.global_cond_dim == 3 * 19
    obs = state_obs(2, _dims(policy), 3)
    assert policy.predict_action_chunk(obs).shape == (2, 8, 4)  # full horizon, env units
    policy.reset()
    stats = []
    for _step in range(5):
        action = policy.select_action({k: v[:, -1] for k, v in obs.items()})
        stats.append(policy.last_stats)
        assert action.shape == (2, 4)
    assert stats[0] is stats[3] and stats[4] is not stats[3]  # 4 executed actions, then a new chunk


def test_state_policy_runs_every_sampler_and_picard_is_exact(state_folder):
    policy = policy_accel.load(state_folder, sampler="ddim-10")
    obs = state_obs(2, _dims(policy), 3)
    for spec in ("ddpm", "ddpm-20", "ddim-10", "dpmsolver-10", "paraddim-10", "paradpmsolver-10"):
        policy.set_sampler(spec)
        assert policy.predict_action_chunk(obs).shape == (2, 8, 4), spec
    policy.set_sampler({"name": "picard", "window": 8, "tolerance": 1e-6})
    noise = torch.randn((101, 2, 8, 4), generator=torch.Generator().manual_seed(3))
    picard = policy.predict_action_chunk(obs, noise=noise)
    policy.set_sampler("ddpm")
    sequential = policy.predict_action_chunk(obs, noise=noise)
    assert torch.allclose(picard, sequential, atol=1e-2)
    policy.set_sampler({"name": "picard", "window": 4, "deadline_s": 1e-6})
    policy.predict_action_chunk(obs)
    assert policy.last_stats.hit_deadline


@pytest.mark.parametrize("scheduler", ["DDPM", "DDIM"])
def test_sample_prediction_policy_with_every_sampler(tmp_path, scheduler):
    folder = write_policy_folder(
        tmp_path / "sample",
        STATE_ENV,
        prediction_type="sample",
        clip_sample_range=0.8,
        noise_scheduler_type=scheduler,
        num_inference_steps=10,
    )
    policy = policy_accel.load(folder, sampler=None)
    assert policy.sampler.name == f"{scheduler.lower()}-10"
    obs = state_obs(2, _dims(policy), 2)
    for name in ("ddpm", "ddim", "dpmsolver"):
        policy.set_sampler({"name": f"para{name}", "num_steps": 10, "window": 4, "tolerance": 1e-7})
        noise = torch.randn((11, 2, 16, 2), generator=torch.Generator().manual_seed(5))
        picard = policy.normalizer.normalize("action", policy.predict_action_chunk(obs, noise=noise))
        policy.set_sampler(SequentialSampler(policy.sampler.solver))
        sequential = policy.normalizer.normalize("action", policy.predict_action_chunk(obs, noise=noise))
        assert torch.allclose(picard, sequential, atol=1e-4), name
        assert float(sequential.abs().max()) <= 0.8 + 1e-5  # clip_sample_range bounds the clean chunk


def test_sample_prediction_teacher_is_not_distilled(tmp_path):
    from policy_accel.distill.progressive import distill
    from policy_accel.model.config import DEFAULT_NOISE_SCHEDULER, DiffusionPolicyConfig, UnetConfig
    from policy_accel.policy.diffusion_policy import DiffusionPolicy

    config = DiffusionPolicyConfig(
        unet=UnetConfig(down_dims=(16, 32), diffusion_step_embed_dim=16),
        noise_scheduler={**DEFAULT_NOISE_SCHEDULER, "prediction_type": "sample"},
    )
    with pytest.raises(ValueError, match="epsilon-prediction teacher"):  # students are epsilon-only
        distill(DiffusionPolicy(config), None, tmp_path / "run")


def test_two_cameras_separate_batchnorm_encoders_compiled_names(tmp_path):
    inputs = {
        "observation.images.top": {"type": "VISUAL", "shape": [3, 36, 36]},
        "observation.state": {"type": "STATE", "shape": [2]},
        "observation.images.wrist": {"type": "VISUAL", "shape": [3, 36, 36]},
    }
    folder = write_policy_folder(
        tmp_path / "two",
        inputs,
        use_separate_rgb_encoder_per_camera=True,
        use_group_norm=False,
        compile_model=True,
        resize_shape=[40, 40],
        crop_ratio=0.8,
    )
    policy = load_policy(folder, sampler="ddim-4")
    encoder = policy.obs_encoder
    assert list(policy.config.obs_shapes) == ["observation.state", "observation.images.top", "observation.images.wrist"]
    assert isinstance(encoder.rgb_encoder[0].backbone[1], torch.nn.BatchNorm2d) and not encoder.training
    frames = {k: v[:, 0] for k, v in state_obs(3, _dims(policy), 1).items()}
    with torch.no_grad():
        features = encoder(frames)
        normalized = encoder.normalized(frames)
        top = encoder.rgb_encoder[0](normalized["observation.images.top"])
        wrist = encoder.rgb_encoder[1](normalized["observation.images.wrist"])
    assert torch.allclose(features, torch.cat([normalized["observation.state"], top, wrist], -1), atol=1e-6)
    assert not torch.allclose(top, encoder.rgb_encoder[1](normalized["observation.images.top"]))
    assert policy.predict_action_chunk(state_obs(1, _dims(policy), 2)).shape == (1, 16, 2)


def test_shared_encoder_concatenates_cameras_in_feature_order(tmp_path):
    inputs = {
        "observation.images.a": {"type": "VISUAL", "shape": [3, 33, 33]},
        "observation.images.b": {"type": "VISUAL", "shape": [3, 33, 33]},
        "observation.state": {"type": "STATE", "shape": [2]},
    }
    policy = load_policy(write_policy_folder(tmp_path / "shared", inputs, crop_shape=[30, 31]))
    encoder = policy.obs_encoder
    frames = {k: v[:, 0] for k, v in state_obs(2, _dims(policy), 1).items()}
    with torch.no_grad():
        normalized = encoder.normalized(frames)
        cameras = [encoder.rgb_encoder(normalized[k]) for k in inputs if "images" in k]
        parts = [normalized["observation.state"], *cameras]
        assert torch.allclose(encoder(frames), torch.cat(parts, -1), atol=1e-6)


def test_torchvision_centre_crop_rounds_odd_margins():
    image = torch.arange(15 * 15, dtype=torch.float32).reshape(1, 1, 15, 15)
    assert torchvision_center_crop(image, 10, 12)[0, 0, 0, 0] == image[0, 0, 2, 2]  # round(2.5) = 2, round(1.5) = 2


@pytest.mark.parametrize("mode", ["MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10"])
def test_feature_normaliser_formulas(mode):
    x = torch.tensor([[0.0, 5.0, 10.0]])
    stats = {
        "mean": torch.tensor([1.0, 2.0, 3.0]),
        "std": torch.tensor([2.0, 0.0, 4.0]),
        "min": torch.tensor([0.0, 5.0, -10.0]),
        "max": torch.tensor([10.0, 5.0, 10.0]),
        "q01": torch.tensor([0.0, 1.0, 2.0]),
        "q99": torch.tensor([4.0, 1.0, 6.0]),
        "q10": torch.tensor([1.0, 1.0, 2.0]),
        "q90": torch.tensor([3.0, 1.0, 6.0]),
    }
    norm = LeRobotFeatureNormalizer(mode, (3,), 1e-8, stats)
    if mode == "MEAN_STD":
        expected = (x - stats["mean"]) / (stats["std"] + 1e-8)
        inverse = x * stats["std"] + stats["mean"]
    else:
        low, high = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}[mode]
        span = stats[high] - stats[low]
        span = torch.where(span == 0, torch.tensor(1e-8), span)
        expected, inverse = 2 * (x - stats[low]) / span - 1, (x + 1) / 2 * span + stats[low]
    assert torch.allclose(norm.normalize(x), expected) and torch.allclose(norm.unnormalize(x), inverse)


def test_identity_action_and_mean_std_state(tmp_path):
    folder = write_policy_folder(
        tmp_path / "id", STATE_ENV, normalization_mapping={"STATE": "MEAN_STD", "ENV": "MIN_MAX"}
    )
    policy = load_policy(folder)
    assert policy.config.obs_encoder["normalize"] == {
        "observation.state": {"mode": "MEAN_STD", "shape": [3]},
        "observation.environment_state": {"mode": "MIN_MAX", "shape": [6]},
    }
    y = torch.randn(2, 16, 2)
    assert torch.equal(policy.normalizer.unnormalize("action", y), y)  # no ACTION entry: IDENTITY


def test_flat_visual_stats_broadcast_per_channel(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = write_policy_folder(tmp_path / "flat", _one_camera((3, 32, 32)))
    path = folder / "policy_preprocessor_step_3_normalizer_processor.safetensors"
    stats = load_file(str(path))
    save_file({k: (v.flatten() if k.startswith("observation.image.") else v) for k, v in stats.items()}, str(path))
    policy = load_policy(folder)
    image = torch.rand(1, 3, 32, 32)
    mean, std = stats["observation.image.mean"], stats["observation.image.std"]
    normalized = policy.obs_encoder.normalized({"observation.image": image})["observation.image"]
    assert torch.allclose(normalized, (image - mean) / (std + 1e-8))


# ---------------------------------------------------------------------------- bad folders and inputs
@pytest.fixture
def folder_copy(state_folder, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(state_folder, tmp_path / "copy"))


@pytest.mark.parametrize(
    "name",
    [
        "config.json",
        "model.safetensors",
        "policy_preprocessor.json",
        "policy_postprocessor.json",
        "policy_postprocessor_step_0_unnormalizer_processor.safetensors",
    ],
)
def test_missing_file_is_named(folder_copy, name):
    (folder_copy / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        policy_accel.load(folder_copy)


@pytest.mark.parametrize(
    "name", ["config.json", "model.safetensors", "policy_preprocessor_step_3_normalizer_processor.safetensors"]
)
def test_corrupt_file_is_named(folder_copy, name):
    path = folder_copy / name
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        policy_accel.load(folder_copy)


def test_weights_that_do_not_fit_are_listed(folder_copy):
    from safetensors.torch import load_file, save_file

    path = folder_copy / "model.safetensors"
    weights = load_file(str(path))
    del weights["diffusion.unet.final_conv.1.bias"]
    save_file(weights, str(path))
    with pytest.raises(CheckpointError, match=r"missing keys \['model\.final_conv\.1\.bias'\]"):
        policy_accel.load(folder_copy)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"type": "act"}, "policy type 'act' is not supported"),
        ({"vision_backbone": "resnet34"}, "vision_backbone 'resnet34' is not supported"),
        ({"prediction_type": "v_prediction"}, "prediction_type 'v_prediction' is not supported"),
        ({"noise_scheduler_type": "DPM"}, "noise_scheduler_type 'DPM' is not supported"),
        ({"use_peft": True}, "use_peft"),
        ({"some_new_option": 3}, r"unsupported DiffusionConfig fields \['some_new_option'\]"),
        ({"normalization_mapping": {"STATE": "LOG"}}, "normalization_mapping has unsupported modes"),
        ({"n_action_steps": 16}, "horizon 16 must cover the executed actions"),
        ({"crop_shape": [50, 40]}, r"crop_shape \(50, 40\) does not fit"),
        ({"beta_schedule": "cubic"}, "cubic"),
        ({"input_features": {"observation.state": {"type": "STATE", "shape": [3]}}}, "at least one VISUAL feature"),
    ],
)
def test_unsupported_option_is_refused_by_name(tmp_path, change, message):
    inputs = _one_camera((3, 32, 32)) if "crop_shape" in change or "vision_backbone" in change else STATE_ENV
    folder = write_policy_folder(tmp_path / "bad", inputs)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(LeRobotCheckpointError, match=message):
        policy_accel.load(folder)


def test_unsupported_processor_step_is_refused(folder_copy):
    path = folder_copy / "policy_preprocessor.json"
    pipeline = json.loads(path.read_text())
    pipeline["steps"].insert(1, {"registry_name": "delta_action_processor", "config": {}})
    path.write_text(json.dumps(pipeline))
    with pytest.raises(LeRobotCheckpointError, match="delta_action_processor"):
        policy_accel.load(folder_copy)


def test_miskeyed_observation_names_the_missing_key(state_folder):
    policy = policy_accel.load(state_folder, sampler="ddim-4")
    obs = {k: v.numpy() for k, v in state_obs(1, _dims(policy), 3).items()}
    obs["observation.env_state"] = obs.pop("observation.environment_state")
    with pytest.raises(ValueError, match="missing keys \\['observation.environment_state'\\]"):
        policy.predict_action_chunk(obs)
    policy.reset()
    with pytest.raises(ValueError, match="observation.environment_state"):
        policy.select_action({k: v[0, 0] for k, v in obs.items()})
    with pytest.raises(TypeError, match="dict"):
        policy.select_action(np.zeros(9))


def test_saved_copy_reloads_without_the_folder(state_folder, tmp_path):
    from policy_accel.policy.loading import save_policy

    policy = policy_accel.load(state_folder, sampler="ddim-4")
    copy = load_policy(save_policy(policy, tmp_path / "copy.safetensors"), sampler="ddim-4")
    obs = state_obs(2, _dims(policy), 3)
    noise = torch.randn((5, 2, 8, 4), generator=torch.Generator().manual_seed(0))
    assert torch.equal(policy.predict_action_chunk(obs, noise=noise), copy.predict_action_chunk(obs, noise=noise))
