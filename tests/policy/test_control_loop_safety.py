"""What a robot's control loop relies on: its buffers stay its own, nothing NaN is ever executed or
"converged", threads are the caller's choice, and the first tick does not stall on calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_policy

import policy_accel
from policy_accel.policy.calibration_cache import cache_path
from policy_accel.samplers import build_sampler
from policy_accel.samplers.base import NonFiniteSampleError
from policy_accel.samplers.window_calibration import choose_window


def _observations(steps: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 512, (steps, 20)).astype(np.float32)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_reused_observation_buffer_gives_the_actions_of_fresh_copies(kind: str) -> None:
    observations = _observations(20)
    fresh, reused = tiny_policy("ddim-3"), tiny_policy("ddim-3")
    fresh.reset(seed=1)
    reused.reset(seed=1)
    buffer = np.empty(20, dtype=np.float32) if kind == "numpy" else torch.empty(20)
    for obs in observations:
        expected = fresh.select_action(obs.copy())
        buffer[:] = obs if kind == "numpy" else torch.from_numpy(obs)
        np.testing.assert_array_equal(reused.select_action(buffer), expected)


def test_reused_buffer_matters_the_history_holds_two_different_frames() -> None:
    """Guards the test above: with n_obs_steps=2 the planner must see both frames, not one twice."""
    policy = tiny_policy("ddim-3")
    seen = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda obs, **kw: seen.append(obs.clone()) or original(obs, **kw)
    buffer = np.empty(20, dtype=np.float32)
    for obs in _observations(9):
        buffer[:] = obs
        policy.select_action(buffer)
    assert len(seen) == 2 and not torch.equal(seen[1][0, 0], seen[1][0, 1])


@pytest.mark.parametrize(
    "sampler",
    [
        "ddim-3",
        "ddpm-6",
        {"name": "paraddpm", "num_steps": 6, "window": 3},
        {"name": "paraddim", "num_steps": 4, "window": 4},
    ],
)
def test_huge_finite_observation_is_an_error_not_nan_actions(sampler) -> None:
    policy = tiny_policy(sampler)
    obs = np.full(20, 1e30, dtype=np.float32)
    with pytest.raises(ValueError, match="out of range"):
        policy.select_action(obs)


@pytest.mark.parametrize("spec", [{"name": "paraddpm", "num_steps": 6, "window": 3}, "ddim-3", "ddpm-5"])
def test_non_finite_network_output_is_never_a_converged_chunk(spec) -> None:
    sampler = build_sampler(spec)
    cond = torch.zeros(1, 4)

    def nan_denoiser(x, t, c):
        return torch.full_like(x, float("nan"))

    with pytest.raises(NonFiniteSampleError, match="NaN"):
        sampler.sample(nan_denoiser, cond, (1, 8, 2), generator=torch.Generator().manual_seed(0))


def test_picard_inf_after_some_steps_is_reported_with_its_steps() -> None:
    sampler = build_sampler({"name": "paraddpm", "num_steps": 10, "window": 4})

    def late_inf(x, t, c):
        out = torch.zeros_like(x)
        out[t < 30] = float("inf")
        return out

    with pytest.raises(NonFiniteSampleError, match="steps"):
        sampler.sample(late_inf, torch.zeros(1, 4), (1, 8, 2), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"tolerance": float("inf")}, "tolerance"),
        ({"tolerance": float("nan")}, "tolerance"),
        ({"tolerance": True}, "tolerance"),
        ({"deadline_s": float("inf")}, "deadline_s"),
        ({"deadline_s": 0}, "deadline_s"),
    ],
)
def test_bad_picard_options_are_refused(options, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_sampler({"name": "paraddpm", "num_steps": 10, **options})


def test_load_refuses_bad_threads_and_warm_start() -> None:
    teacher = "checkpoints/pusht_keypoints_teacher.safetensors"
    with pytest.raises(ValueError, match="threads"):
        policy_accel.load(teacher, threads=0)
    with pytest.raises(TypeError, match="warm_start"):
        policy_accel.load(teacher, warm_start="false")


def test_threads_apply_while_planning_and_are_restored() -> None:
    policy = tiny_policy("ddim-3")
    policy.threads = 2
    seen = []
    original = policy.model.forward
    policy.model.forward = lambda *a, **k: seen.append(torch.get_num_threads()) or original(*a, **k)
    before = torch.get_num_threads()
    policy.select_action(_observations(1)[0])
    assert seen and set(seen) == {2} and torch.get_num_threads() == before


def test_tie_rule_prefers_the_smallest_near_tied_window() -> None:
    assert choose_window({1: 1.0, 4: 0.50, 8: 0.47, 16: 0.52}) == 4
    assert choose_window({1: 1.0, 4: 0.80, 8: 0.47}) == 8


def test_warmup_calibrates_once_caches_and_leaves_rngs_alone(capsys) -> None:
    spec = {"name": "paraddpm", "num_steps": 8, "window": "auto", "auto_candidates": [2, 4]}
    policy = tiny_policy(spec)
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    policy_state = policy.generator.get_state()
    info = policy.warmup()
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(policy.generator.get_state(), policy_state)
    assert info["window"] in (2, 4) and info["from_cache"] is False and info["seconds"] > 0
    assert "warmup" in capsys.readouterr().err
    cached = json.loads(cache_path().read_text())
    assert len(cached) == 1 and next(iter(cached.values()))["window"] == info["window"]

    again = tiny_policy(spec)  # same weights (same seed), same machine and threads: reused, not measured
    calls = []
    again.sampler.calibrate = lambda *a, **k: calls.append(1)
    info2 = again.warmup()
    assert calls == [] and info2["from_cache"] is True and info2["window"] == info["window"]

    other = tiny_policy(spec, seed=5)  # other weights: calibrated afresh
    assert other.warmup(verbose=False)["from_cache"] is False
    assert len(json.loads(cache_path().read_text())) == 2


def test_first_select_action_without_warmup_announces_calibration(capsys) -> None:
    policy = tiny_policy({"name": "paraddpm", "num_steps": 8, "window": "auto", "auto_candidates": [2, 4]})
    policy.select_action(_observations(1)[0])
    assert "calibrating the Picard window" in capsys.readouterr().err
    assert policy.sampler.calibration["window"] in (2, 4)
