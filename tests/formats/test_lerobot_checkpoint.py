"""LeRobot diffusion folders load through ``policy_accel.load`` and reproduce LeRobot's own numbers
(``../shared/fixtures/lerobot``: image + state and state + environment-state policies)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from helpers.lerobot import FIXTURES
from helpers.paths import needs_shared

import policy_accel
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import load_policy
from policy_accel.samplers import SampleOutput

pytestmark = needs_shared(FIXTURES)

NAMES = ("diffusion_image_state", "diffusion_state")
# Measured against LeRobot's own numbers (both fixtures): normalisation 0 (actions 1.2e-7), encoder features and
# conditioning <= 4.2e-7, U-Net outputs <= 9.6e-7 (float32 rounding of one forward); chunks in env units (0..512)
# DDIM-10 <= 7.6e-4 (normalised 3.0e-6), DDPM-100 <= 1.34e-3. Bounds: ~5x the measured, each its own.
NET_TOL, NORM_TOL = 5e-6, 1e-6
DDIM_ENV_TOL, DDIM_NORM_TOL, DDPM_ENV_TOL = 4e-3, 1.5e-5, 7e-3


@pytest.fixture(scope="module", params=NAMES)
def case(request) -> tuple[DiffusionPolicy, Any]:
    policy = policy_accel.load(FIXTURES / request.param, sampler="ddim-10")
    return policy, np.load(FIXTURES / f"{request.param}_reference.npz")


def _obs(ref: Any, prefix: str = "obs_") -> dict[str, np.ndarray]:
    names = {"image": "observation.image", "state": "observation.state", "env_state": "observation.environment_state"}
    return {feature: ref[prefix + short] for short, feature in names.items() if prefix + short in ref.files}


def _max_diff(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(np.asarray(a, dtype=np.float64) - b.astype(np.float64)).max())


def test_normalisation_is_lerobots(case):
    policy, ref = case
    obs = {k: torch.from_numpy(v) for k, v in _obs(ref).items()}
    normalized = policy.obs_encoder.normalized(obs)
    for key, short in (
        ("observation.image", "image"),
        ("observation.state", "state"),
        ("observation.environment_state", "env_state"),
    ):
        if key in obs:
            assert _max_diff(normalized[key], ref[f"norm_obs_{short}"]) <= NORM_TOL, key
    if "observation.environment_state" in obs:  # type ENV, no ENV entry in norm_map: raw pixel units
        assert torch.equal(normalized["observation.environment_state"], obs["observation.environment_state"])
    action = policy.normalizer.normalize("action", torch.from_numpy(ref["demo_action"]))
    assert _max_diff(action, ref["demo_action_norm"]) <= NORM_TOL


def test_image_features_and_global_conditioning(case):
    policy, ref = case
    cond = policy.encode_obs(_obs(ref))
    assert _max_diff(cond, ref["global_cond"]) <= NET_TOL
    if "img_features" in ref.files:
        encoder = policy.obs_encoder
        images = encoder.normalized({"observation.image": torch.from_numpy(ref["obs_image"]).flatten(0, 1)})
        with torch.no_grad():
            keypoints = encoder.rgb_encoder.keypoints(images["observation.image"])
            features = encoder.rgb_encoder(images["observation.image"])
        assert _max_diff(keypoints.reshape(ref["img_keypoints"].shape), ref["img_keypoints"]) <= NET_TOL
        assert _max_diff(features.reshape(ref["img_features"].shape), ref["img_features"]) <= NET_TOL


def test_unet_outputs(case):
    policy, ref = case
    cond = torch.from_numpy(ref["global_cond"])
    with torch.no_grad():
        for k in range(ref["eps_timesteps"].shape[0]):
            out = policy.denoise(torch.from_numpy(ref["eps_noisy"][k]), torch.from_numpy(ref["eps_timesteps"][k]), cond)
            assert _max_diff(out, ref["eps_unet_out"][k]) <= NET_TOL, k


def _ddim_noise(ref: Any) -> torch.Tensor:
    noise = torch.zeros((11, *ref["ddim_noise"].shape))
    noise[0] = torch.from_numpy(ref["ddim_noise"])
    return noise


def _ddpm_noise(ref: Any) -> torch.Tensor:
    """Row 0 is x_T, row i + 1 the variance draw of step i (t = 99 - i); the last step (t = 0) draws none."""
    noise = torch.zeros((101, *ref["ddpm_noise"].shape))
    noise[0] = torch.from_numpy(ref["ddpm_noise"])
    noise[1:100] = torch.from_numpy(ref["ddpm_step_noise"])
    return noise


def test_ddim10_chunk_and_executed_slice(case):
    policy, ref = case
    chunk = policy.predict_action_chunk(_obs(ref), noise=_ddim_noise(ref))
    assert chunk.shape == ref["ddim_chunk"].shape  # the full horizon, in env units
    assert _max_diff(chunk, ref["ddim_chunk"]) <= DDIM_ENV_TOL
    assert _max_diff(policy.normalizer.normalize("action", chunk), ref["ddim_chunk_norm"]) <= DDIM_NORM_TOL
    start, stop = (int(i) for i in ref["action_slice"])
    assert (start, stop) == (policy.config.first_action, policy.config.first_action + policy.config.n_action_steps)
    assert _max_diff(chunk[:, start:stop], ref["ddim_action"]) <= DDIM_ENV_TOL


def test_ddpm100_chunk_with_recorded_draws(case):
    policy, ref = case
    policy.set_sampler("ddpm")
    try:
        assert policy.sampler.solver.timesteps.tolist() == ref["ddpm_timesteps"].tolist()
        chunk = policy.predict_action_chunk(_obs(ref), noise=_ddpm_noise(ref))
    finally:
        policy.set_sampler("ddim-10")
    assert _max_diff(chunk, ref["ddpm_chunk"]) <= DDPM_ENV_TOL
    assert _max_diff(chunk[:, 1:9], ref["ddpm_action"]) <= DDPM_ENV_TOL


def test_picard_with_tiny_tolerance_equals_sequential(case):
    policy, ref = case
    obs, noise = _obs(ref), _ddpm_noise(ref)
    policy.set_sampler({"name": "paraddpm", "window": 16, "tolerance": 1e-6})
    try:
        picard = policy.predict_action_chunk(obs, noise=noise)
        assert policy.last_stats.converged
    finally:
        policy.set_sampler("ddim-10")
    assert _max_diff(picard, ref["ddpm_chunk"]) <= DDPM_ENV_TOL


class _RecordedNoise:
    """A sampler that hands the recorded initial noise of each planned chunk to the real one."""

    def __init__(self, inner: Any, initial: np.ndarray) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0
        self.initial = initial

    def sample(self, denoiser, cond, shape, generator=None, **kwargs) -> SampleOutput:
        noise = torch.zeros((self.inner.solver.num_steps + 1, *shape))
        noise[0] = torch.from_numpy(self.initial[self.calls])
        self.calls += 1
        return self.inner.sample(denoiser, cond, shape, noise=noise, **kwargs)


def test_select_action_queue_after_reset(case):
    policy, ref = case
    recorded = _RecordedNoise(policy.sampler, ref["rollout_noise"])
    policy.set_sampler(recorded)
    policy.reset()
    planned, rollout_obs = [], _obs(ref, "rollout_obs_")
    try:
        for call in range(ref["rollout_frame_index"].shape[0]):
            before = recorded.calls
            action = policy.select_action({k: v[call] for k, v in rollout_obs.items()})
            if recorded.calls != before:
                planned.append(call)
            assert action.shape == ref["rollout_action"][call].shape
            assert _max_diff(action, ref["rollout_action"][call]) <= DDIM_ENV_TOL, call  # a DDIM-10 rollout
    finally:
        policy.set_sampler("ddim-10")
        policy.reset()
    assert planned == ref["rollout_replan_calls"].tolist()


def test_default_sampler_is_the_folders_own():
    policy = load_policy(FIXTURES / "diffusion_state")
    assert policy.sampler.name == "ddpm-100"  # noise_scheduler_type DDPM, num_inference_steps null
    assert policy.config.obs_type == "lerobot" and list(policy.config.obs_shapes) == [
        "observation.state",
        "observation.environment_state",
    ]
