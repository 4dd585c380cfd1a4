"""A custom Sampler subclass (and a duck-typed one) works wherever a shipped sampler does: set_sampler,
predict_action_chunk, select_action, warm start, warmup() (with and without a calibration), compile,
device moves and the rollout harness. Plus the observation checks of policy/obs_validation.py."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from helpers import tiny_policy

from policy_accel.model.config import DiffusionPolicyConfig
from policy_accel.policy.calibration_cache import cache_path
from policy_accel.policy.obs_validation import as_tensor, check_obs, checked_history, checked_step
from policy_accel.samplers import SampleOutput, Sampler, SamplerAdapter, SampleStats


class OneStep(Sampler):
    """x_T minus the predicted noise, in one network call; records what the policy hands it."""

    def __init__(self, name: str = "one-step") -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []
        self.moves: list[torch.device] = []
        self.compiles: list[str | None] = []
        self.checked: list[tuple[int, ...]] = []

    def sample(self, denoiser, cond, shape, generator=None, noise=None, **kwargs: Any) -> SampleOutput:
        self.calls.append({"noise": noise, **kwargs})
        x = noise[0] if noise is not None else self.initial_noise(shape, generator, cond.device)[0]
        t = torch.full((shape[0],), 99, dtype=torch.long, device=cond.device)
        chunk = x - denoiser(x, t, cond)
        return SampleOutput(sample=chunk, stats=SampleStats(nfe=1, rounds=1), trajectory=torch.stack([x, chunk]))

    def to(self, device: torch.device | str) -> OneStep:
        self.moves.append(torch.device(device))
        return self

    def compile(self, mode: str | None) -> OneStep:
        self.compiles.append(mode)
        return self

    def check_compatible(self, obs_dim, n_obs_steps, horizon, action_dim, normalizer) -> None:
        self.checked.append((obs_dim, n_obs_steps, horizon, action_dim))
        if horizon != 16:
            raise ValueError("one-step wants horizon 16")


class GuessTaking(OneStep):
    """Declares that it takes an initial guess (its trajectory has two rows)."""

    accepts_initial_guess = True

    def initial_noise(self, shape, generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
        return super().initial_noise(shape, generator, device, dtype).repeat(2, 1, 1, 1)


class Calibrated(OneStep):
    """Needs a (fake) calibration before its first chunk, like Picard with window="auto"."""

    def __init__(self) -> None:
        super().__init__("calibrated")
        self.measured = 0

    @property
    def needs_calibration(self) -> bool:
        return self.calibration is None

    def calibrate(self, denoiser, cond, shape) -> dict[str, Any]:
        self.measured += 1
        self.calibration = {"window": 3, "why": "measured"}
        return self.calibration


class Duck:
    """Only name and sample: what samplers looked like before the base class."""

    name = "duck"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def sample(self, denoiser, cond, shape, generator=None, **kwargs):
        self.calls.append(kwargs)
        return SampleOutput(sample=torch.zeros(shape), stats=SampleStats(nfe=0, rounds=0))


def _obs(batch: int | None = None, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 512, (20,) if batch is None else (batch, 20)).astype(np.float32)


def test_custom_sampler_plans_chunks_and_actions() -> None:
    policy = tiny_policy()
    sampler = OneStep()
    policy.set_sampler(sampler)
    assert policy.sampler is sampler and sampler.checked == [(20, 2, 16, 2)]
    assert sampler.moves == [torch.device("cpu")] and sampler.compiles == []  # eager policy: not compiled
    chunk = policy.predict_action_chunk(np.stack([_obs(3), _obs(3, 1)], axis=1))
    assert chunk.shape == (3, 16, 2) and torch.isfinite(chunk).all()
    assert policy.last_stats.nfe == 1 and sampler.calls[-1]["noise"] is None  # no warm start: draws its own
    policy.reset(seed=1)
    first = policy.select_action(_obs())
    assert first.shape == (2,) and len(sampler.calls) == 2
    for _ in range(policy.config.n_action_steps - 1):
        policy.select_action(_obs())
    assert len(sampler.calls) == 2  # the queue served the rest of the chunk
    policy.select_action(_obs())
    assert len(sampler.calls) == 3


def test_seeded_custom_sampler_repeats() -> None:
    policy = tiny_policy()
    policy.set_sampler(OneStep())
    runs = []
    for _ in range(2):
        policy.reset(seed=5)
        runs.append(np.stack([policy.select_action(_obs(2)) for _ in range(10)]))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_incompatible_custom_sampler_is_refused_and_the_old_one_kept() -> None:
    policy = tiny_policy()
    before = policy.sampler

    class Picky(OneStep):
        def check_compatible(self, obs_dim, n_obs_steps, horizon, action_dim, normalizer) -> None:
            raise ValueError("not this policy")

    with pytest.raises(ValueError, match="not this policy"):
        policy.set_sampler(Picky())
    assert policy.sampler is before


def test_warm_start_with_a_custom_sampler_shifts_its_noise() -> None:
    policy = tiny_policy()
    policy.warm_start = True
    sampler = OneStep()
    policy.set_sampler(sampler)
    policy.reset(seed=2)
    steps = policy.config.n_action_steps
    for _ in range(steps + 1):  # two chunks
        policy.select_action(_obs(2))
    first, second = (call["noise"] for call in sampler.calls)
    assert first.shape == (1, 2, 16, 2)  # the base class's one row of noise
    expected = torch.randn((1, 2, 16, 2), generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, expected)
    assert torch.equal(second[..., : 16 - steps, :], first[..., steps:, :])  # shifted by the executed actions
    assert all("init_trajectory" not in call for call in sampler.calls)  # accepts_initial_guess is False


def test_warm_start_hands_the_guess_to_samplers_that_take_one() -> None:
    policy = tiny_policy()
    policy.warm_start = True
    sampler = GuessTaking()
    policy.set_sampler(sampler)
    policy.reset(seed=2)
    for _ in range(policy.config.n_action_steps + 1):
        policy.select_action(_obs(2))
    assert "init_trajectory" not in sampler.calls[0] and sampler.calls[0]["noise"].shape == (2, 2, 16, 2)
    assert sampler.calls[1]["init_trajectory"].shape == (2, 2, 16, 2)


def test_duck_typed_sampler_works_with_warm_start() -> None:
    """The issue's bug: warm start reached into ``sampler.solver`` and raised AttributeError."""
    policy = tiny_policy()
    policy.warm_start = True
    duck = Duck()
    policy.set_sampler(duck)
    assert isinstance(policy.sampler, SamplerAdapter) and policy.sampler.name == "duck"
    policy.reset(seed=0)
    for _ in range(policy.config.n_action_steps + 1):
        policy.select_action(_obs())
    assert len(duck.calls) == 2 and all(call["noise"].shape == (1, 1, 16, 2) for call in duck.calls)
    assert all("init_trajectory" not in call for call in duck.calls)
    policy.warmup(verbose=False)
    policy.sampler = Duck()  # plain assignment wraps it too
    assert isinstance(policy.sampler, SamplerAdapter)
    assert policy.predict_action_chunk(np.stack([_obs(1)] * 2, axis=1)).shape == (1, 16, 2)


def test_warmup_with_a_custom_sampler(capsys) -> None:
    policy = tiny_policy()
    sampler = OneStep()
    policy.set_sampler(sampler)
    generator_state = policy.generator.get_state()
    info = policy.warmup()
    assert info["sampler"] == "one-step" and "window" not in info and len(sampler.calls) == 1
    assert torch.equal(policy.generator.get_state(), generator_state)
    assert "warmup of one-step" in capsys.readouterr().err


def test_a_custom_calibration_runs_once_and_is_cached() -> None:
    policy = tiny_policy()
    sampler = Calibrated()
    policy.set_sampler(sampler)
    info = policy.warmup(verbose=False)
    assert sampler.measured == 1 and info["window"] == 3 and info["from_cache"] is False
    assert sampler.calibration == {"window": 3, "why": "measured", "from_cache": False}
    policy.select_action(_obs())
    assert sampler.measured == 1  # resolved: not measured again
    cached = json.loads(cache_path().read_text())
    assert [entry["window"] for entry in cached.values()] == [3]
    again = Calibrated()
    other = tiny_policy()
    other.set_sampler(again)
    other.select_action(_obs())  # first call without warmup: reuses the cached calibration
    assert again.measured == 0 and again.calibration["from_cache"] is True


def test_compile_and_device_moves_reach_a_custom_sampler() -> None:
    policy = tiny_policy()
    sampler = OneStep()
    policy.set_sampler(sampler)
    obs = np.stack([_obs(2)] * 2, axis=1)
    eager = policy.predict_action_chunk(obs, noise=torch.zeros(1, 2, 16, 2))
    policy.compile("freeze")
    assert sampler.compiles == ["freeze"]
    compiled = policy.predict_action_chunk(obs, noise=torch.zeros(1, 2, 16, 2))
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-3)
    later = OneStep("later")
    policy.set_sampler(later)  # set on a compiled policy: compiled with its mode
    assert later.compiles == ["freeze"]
    policy.compile(False)
    assert later.compiles == ["freeze", None]
    policy.to("cpu")
    policy.predict_action_chunk(obs)
    assert later.moves and all(device == policy.device for device in later.moves)


def test_model_fingerprint_is_public_lazy_and_stable() -> None:
    policy = tiny_policy()
    assert policy._model_fingerprint is None  # nothing hashed until asked
    first = policy.model_fingerprint
    assert isinstance(first, str) and len(first) == 16 and policy.model_fingerprint == first
    assert tiny_policy().model_fingerprint == first and tiny_policy(seed=3).model_fingerprint != first


def test_custom_sampler_in_the_rollout_harness() -> None:
    from policy_accel.eval.rollout import evaluate_policy

    policy = tiny_policy()
    previous = policy.sampler
    sampler = OneStep()
    env_cfg = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300, "render_size": 64}
    out = evaluate_policy(
        policy, sampler=sampler, env_cfg=env_cfg, seeds=[100000, 100001], progress=False, max_steps=10
    )
    assert out["sampler"] == "one-step" and out["n_episodes"] == 2 and out["nfe_per_chunk"] == 1
    assert len(sampler.calls) >= 2  # 10 steps of 8-action chunks (and whatever warm-up the harness does)
    assert policy.sampler is previous
    out = evaluate_policy(policy, sampler=Duck(), env_cfg=env_cfg, seeds=[100000], progress=False, max_steps=3)
    assert out["sampler"] == "duck"


# ------------------------------------------------------------------ observation checks
DICT_CONFIG = DiffusionPolicyConfig(
    obs_dim=12,
    obs_shapes={"image": {"shape": [3, 4, 4], "type": "rgb"}, "state": {"shape": [2], "type": "low_dim"}},
)


def test_array_history_checks() -> None:
    config = DiffusionPolicyConfig()
    good = checked_history(config, np.zeros((3, 2, 20), np.float64))
    assert good.dtype == torch.float32 and good.shape == (3, 2, 20)
    with pytest.raises(ValueError, match=r"obs_history must have shape \(batch, 2, 20\), got \(2, 20\)"):
        checked_history(config, np.zeros((2, 20)))
    bad = np.zeros((1, 2, 20))
    bad[0, 1, 3] = np.nan
    with pytest.raises(ValueError, match="obs_history contains NaN or inf"):
        checked_history(config, bad)
    with pytest.raises(TypeError, match="obs_history must be numeric, got dtype <U1"):
        checked_history(config, np.full((1, 2, 20), "a"))
    with pytest.raises(TypeError, match="obs_history must be numeric, got dtype torch.bool"):
        checked_history(config, torch.zeros((1, 2, 20), dtype=torch.bool))


def test_step_checks_copy_and_batch() -> None:
    config = DiffusionPolicyConfig()
    buffer = np.ones(20, np.float32)
    step, single = checked_step(config, buffer)
    buffer[:] = 7  # a loop reusing its buffer must not change what was queued
    assert single and step.shape == (1, 20) and float(step.max()) == 1.0
    step, single = checked_step(config, np.ones((4, 20)))
    assert not single and step.shape == (4, 20)
    with pytest.raises(ValueError, match=r"obs must have shape \(batch, 20\), got \(1, 21\)"):
        checked_step(config, np.ones(21))
    with pytest.raises(ValueError, match="obs contains NaN or inf"):
        checked_step(config, np.full(20, np.inf))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 3\)"):
        check_obs(as_tensor([1, 2, 3], "x"), (3,), "x")


def test_dict_checks() -> None:
    image, state = np.full((3, 4, 4), 0.5, np.float32), np.zeros(2, np.float32)
    step, single = checked_step(DICT_CONFIG, {"image": image, "state": state, "extra": "ignored"})
    assert single and set(step) == {"image", "state"} and step["image"].shape == (1, 3, 4, 4)
    history = checked_history(DICT_CONFIG, {"image": np.zeros((5, 2, 3, 4, 4)), "state": np.zeros((5, 2, 2))})
    assert history["state"].shape == (5, 2, 2)
    with pytest.raises(TypeError, match=r"obs must be a dict with keys \['image', 'state'\], got ndarray"):
        checked_step(DICT_CONFIG, np.zeros(5))
    with pytest.raises(ValueError, match=r"obs_history is missing keys \['state'\]"):
        checked_history(DICT_CONFIG, {"image": np.zeros((5, 2, 3, 4, 4))})
    with pytest.raises(TypeError, match=r"obs\['image'\] is uint8: images must be float in \[0, 1\]"):
        checked_step(DICT_CONFIG, {"image": image.astype(np.uint8), "state": state})
    with pytest.raises(ValueError, match=r"obs_history: keys disagree on the batch size"):
        checked_history(DICT_CONFIG, {"image": np.zeros((5, 2, 3, 4, 4)), "state": np.zeros((4, 2, 2))})
    with pytest.raises(ValueError, match=r"obs_history\['state'\] must have shape \(batch, 2, 2\)"):
        checked_history(DICT_CONFIG, {"image": np.zeros((5, 2, 3, 4, 4)), "state": np.zeros((5, 2, 3))})
