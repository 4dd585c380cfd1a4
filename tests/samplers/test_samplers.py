"""Solvers match diffusers step for step; Picard reproduces its sequential solver."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from helpers.paths import TEACHER

from policy_accel.model.config import DEFAULT_NOISE_SCHEDULER as NS
from policy_accel.samplers import PicardSampler, SequentialSampler, build_sampler
from policy_accel.samplers.solvers import DDIMSolver, DDPMSolver, DPMSolverPP

SHAPE = (3, 16, 2)


def fake_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(0.7 * x + 0.01 * t.float().view(-1, 1, 1)) * 1.3


def _keys(*names):
    return {k: NS[k] for k in names}


def test_ddpm_step_matches_diffusers_ddpm_scheduler():
    solver, ref = DDPMSolver(NS), DDPMScheduler(**NS)
    ref.set_timesteps(100)
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    for i, t in enumerate(ref.timesteps):
        state = generator.get_state()
        x = ref.step(fake_eps(x, t.expand(3)), t, x, generator=generator).prev_sample
        replay = torch.Generator()
        replay.set_state(state)
        z = torch.randn(SHAPE, generator=replay) if t > 0 else torch.zeros(SHAPE)
        mean, _ = solver.mean_next(fake_eps(y, t.expand(3)), torch.full((3,), i), y)
        y = mean + solver.noise_std[i] * z
    assert torch.allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("steps", [4, 10, 25])
def test_ddim_step_matches_diffusers(steps):
    solver = DDIMSolver(NS, steps)
    ref = DDIMScheduler(
        **_keys("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample", "prediction_type"),
        set_alpha_to_one=True,
        steps_offset=0,
        timestep_spacing="trailing",
    )
    ref.set_timesteps(steps)
    assert torch.equal(solver.timesteps, ref.timesteps.long())
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    for i, t in enumerate(ref.timesteps):
        x = ref.step(fake_eps(x, t.expand(3)), t, x).prev_sample
        y, _ = solver.mean_next(fake_eps(y, t.expand(3)), torch.full((3,), i), y)
    assert torch.allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("steps", [3, 10, 20])
def test_dpmsolver_step_matches_diffusers(steps):
    solver = DPMSolverPP(NS, steps, clip_sample=False)
    ref = DPMSolverMultistepScheduler(
        **_keys("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
    )
    ref.set_timesteps(steps)
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    x0_prev = None
    for i, t in enumerate(ref.timesteps):
        x = ref.step(fake_eps(x, t.expand(3)), t, x).prev_sample
        y, x0_prev = solver.mean_next(fake_eps(y, t.expand(3)), torch.full((3,), i), y, x0_prev)
    scale = x.abs().max()
    assert torch.allclose(x / scale, y / scale, atol=1e-5)


def test_mean_next_handles_rows_at_different_steps():
    solver = DDPMSolver(NS)
    x = torch.randn(4, 16, 2)
    eps = torch.randn(4, 16, 2)
    steps = torch.tensor([0, 17, 50, 99])
    batched, _ = solver.mean_next(eps, steps, x)
    for row, step in enumerate(steps):
        single, _ = solver.mean_next(eps[row : row + 1], step[None], x[row : row + 1])
        assert torch.allclose(batched[row], single[0])


@pytest.mark.parametrize("kind,steps", [("ddpm", 100), ("ddim", 10), ("dpmsolver", 10), ("ddim", 16)])
@pytest.mark.parametrize("window", [1, 2, 7, 16, "N"])
def test_picard_with_tiny_tolerance_reproduces_sequential(denoiser, cond, kind, steps, window):
    window = steps if window == "N" else window
    reference = build_sampler(f"{kind}-{steps}").sample(
        denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(7)
    )
    picard = build_sampler({"name": f"para{kind}", "num_steps": steps, "window": window, "tolerance": 1e-8})
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(7))
    assert (out.sample - reference.sample).abs().max() < 1e-4
    assert out.stats.rounds <= steps
    assert out.stats.converged


def test_picard_window_one_equals_sequential_exactly_in_rounds_and_nfe(denoiser, cond):
    picard = build_sampler({"name": "paraddpm", "window": 1, "tolerance": 0.5})
    sequential = build_sampler("ddpm")
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(8))
    ref = sequential.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(8))
    assert out.stats.rounds == out.stats.nfe == 100 == ref.stats.rounds
    assert torch.allclose(out.sample, ref.sample, atol=1e-5)


def test_picard_loose_tolerance_needs_fewer_rounds(denoiser, cond):
    picard = build_sampler({"name": "paraddpm", "window": 32, "tolerance": 0.1})
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(9))
    assert out.stats.converged and out.stats.rounds < 100
    assert out.stats.nfe >= out.stats.rounds


def test_picard_max_iterations_stops_early(denoiser, cond):
    picard = build_sampler({"name": "paraddpm", "window": 8, "tolerance": 1e-8, "max_iterations": 5})
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(9))
    assert out.stats.rounds == 5 and not out.stats.converged
    assert torch.isfinite(out.sample).all()


def test_picard_deadline_returns_estimate_and_reports(denoiser, cond):
    picard = build_sampler({"name": "paraddpm", "window": 4, "tolerance": 1e-8})
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(9), deadline_s=1e-6)
    assert out.stats.hit_deadline and out.stats.rounds == 1 and not out.stats.converged
    assert out.sample.shape == SHAPE and torch.isfinite(out.sample).all()


def test_picard_warm_start_from_solution_converges_in_one_round(denoiser, cond):
    picard = build_sampler({"name": "paraddim", "num_steps": 10, "window": 10, "tolerance": 1e-3})
    noise = torch.randn((11, *SHAPE), generator=torch.Generator().manual_seed(10))
    cold = picard.sample(denoiser, cond, SHAPE, noise=noise)
    warm = picard.sample(denoiser, cond, SHAPE, noise=noise, init_trajectory=cold.trajectory)
    assert warm.stats.rounds == 1 < cold.stats.rounds
    assert torch.allclose(warm.sample, cold.sample, atol=1e-4)


def test_auto_window_calibrates_and_reports(denoiser, cond):
    picard = build_sampler({"name": "paraddim", "num_steps": 10, "window": "auto", "tolerance": 0.1})
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(11))
    assert picard.calibration is not None
    assert picard.calibration["window"] in picard.calibration["candidates"]
    assert set(picard.calibration["call_cost_s"]) == set(picard.calibration["candidates"])
    assert out.stats.extra["window"] == picard.calibration["window"]


@pytest.mark.parametrize(
    "options,message",
    [
        ({"window": 0}, "window"),
        ({"window": "wide"}, "window"),
        ({"tolerance": 0.0}, "tolerance"),
        ({"tolerance": -1.0}, "tolerance"),
        ({"tolerance": math.nan}, "tolerance"),
        ({"max_iterations": 0}, "max_iterations"),
    ],
)
def test_picard_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        build_sampler({"name": "paraddpm", **options})


def test_picard_rejects_mismatched_noise_and_init(denoiser, cond):
    picard = build_sampler({"name": "paraddim", "num_steps": 10, "window": 4})
    with pytest.raises(ValueError, match="noise"):
        picard.sample(denoiser, cond, SHAPE, noise=torch.randn(10, *SHAPE))
    with pytest.raises(ValueError, match="init_trajectory"):
        picard.sample(denoiser, cond, SHAPE, init_trajectory=torch.randn(11, 1, 16, 2))


def test_sequential_rejects_bad_cond(denoiser):
    sampler = build_sampler("ddim-4")
    with pytest.raises(ValueError, match="cond"):
        sampler.sample(denoiser, torch.randn(2, 8), SHAPE)
    with pytest.raises(ValueError, match="NaN"):
        sampler.sample(denoiser, torch.full((3, 8), float("nan")), SHAPE)


def test_build_sampler_names_and_errors():
    assert isinstance(build_sampler("ddim-10"), SequentialSampler)
    assert build_sampler("ddim-10").solver.num_steps == 10
    assert isinstance(build_sampler("picard"), PicardSampler)
    assert build_sampler("paradpmsolver-10").solver.num_steps == 10
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("euler")
    with pytest.raises(ValueError, match="only apply to Picard"):
        build_sampler({"name": "ddim", "window": 4})
    with pytest.raises(ValueError, match="unknown options"):
        build_sampler({"name": "ddim", "steps": 4})
    with pytest.raises(ValueError, match="not an integer"):
        build_sampler("ddim-x")


def _denoiser_implying_zero_chunk(solver):
    """A network whose every prediction implies the clean chunk 0: eps = x / sigma_t."""
    abar = DDPMScheduler(**NS).alphas_cumprod

    def denoise(x, t, c):
        return x / (1 - abar[t]).sqrt().view(-1, 1, 1)

    return denoise


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpmsolver"])
def test_extrapolated_guess_is_exact_for_a_network_with_a_fixed_clean_chunk(cond, kind):
    steps = 100 if kind == "ddpm" else 10
    extrapolate = build_sampler({"name": f"para{kind}", "num_steps": steps, "window": steps, "tolerance": 1e-3})
    repeat = build_sampler(
        {"name": f"para{kind}", "num_steps": steps, "window": steps, "tolerance": 1e-3, "initial_guess": "repeat"}
    )
    denoise = _denoiser_implying_zero_chunk(extrapolate.solver)
    noise = torch.randn((steps + 1, *SHAPE), generator=torch.Generator().manual_seed(12))
    reference = build_sampler(f"{kind}-{steps}").sample(denoise, cond, SHAPE, noise=noise)
    fast = extrapolate.sample(denoise, cond, SHAPE, noise=noise)
    slow = repeat.sample(denoise, cond, SHAPE, noise=noise)
    assert fast.stats.rounds == 1 < slow.stats.rounds
    assert torch.allclose(fast.sample, reference.sample, atol=1e-4)
    assert torch.allclose(slow.sample, reference.sample, atol=1e-3)


def test_initial_guess_option_is_validated():
    with pytest.raises(ValueError, match="initial_guess"):
        build_sampler({"name": "paraddpm", "initial_guess": "zeros"})


@pytest.fixture(scope="module")
def teacher_problem():
    """The shipped PushT teacher's denoiser and the conditioning of a real first observation."""
    import gymnasium as gym

    import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)
    from policy_accel.policy.loading import load_policy

    policy = load_policy(TEACHER)
    env = gym.make("policy_accel/PushT-v0", obs_type=policy.config.obs_type)
    obs, _ = env.reset(seed=100000)
    env.close()
    history = torch.as_tensor(obs, dtype=torch.float32).expand(1, policy.config.n_obs_steps, -1)
    cond = policy.normalizer.normalize("obs", history).flatten(1)
    return policy.denoise, cond, (1, policy.config.horizon, policy.config.action_dim)


@pytest.mark.parametrize("kind,steps", [("ddpm", 100), ("ddim", 16), ("dpmsolver", 10)])
@pytest.mark.parametrize("window", [1, 2, 7, 16, "N"])
def test_picard_reproduces_sequential_on_the_shipped_teacher(teacher_problem, kind, steps, window):
    denoiser, teacher_cond, shape = teacher_problem
    window = steps if window == "N" else window
    reference = build_sampler(f"{kind}-{steps}").sample(
        denoiser, teacher_cond, shape, generator=torch.Generator().manual_seed(3)
    )
    picard = build_sampler({"name": f"para{kind}", "num_steps": steps, "window": window, "tolerance": 1e-8})
    out = picard.sample(denoiser, teacher_cond, shape, generator=torch.Generator().manual_seed(3))
    assert out.stats.converged and out.stats.rounds <= steps
    assert (out.sample - reference.sample).abs().max() < 1e-4
