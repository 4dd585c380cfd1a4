"""``prediction_type="sample"`` (LeRobot's second option) and ``clip_sample_range`` in every solver:
each step against diffusers' own scheduler ``step``, and every Picard variant against its sequential solve."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.model.config import DEFAULT_NOISE_SCHEDULER
from policy_accel.samplers import SequentialSampler, build_sampler
from policy_accel.samplers.solvers import DDIMSolver, DDPMSolver, DPMSolverPP

SHAPE = (3, 16, 2)
SCHEDULE_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "clip_sample",
    "clip_sample_range",
    "prediction_type",
)


def _schedule(prediction_type: str, clip_range: float = 1.0, clip: bool = True) -> dict:
    return {
        **DEFAULT_NOISE_SCHEDULER,
        "prediction_type": prediction_type,
        "clip_sample_range": clip_range,
        "clip_sample": clip,
    }


def fake_output(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth stand-in for a network, large enough that clipping engages at every range tested."""
    return torch.tanh(0.7 * x + 0.01 * t.float().view(-1, 1, 1)) * 1.6


@pytest.mark.parametrize("prediction_type,clip_range", [("sample", 1.0), ("sample", 0.5), ("epsilon", 0.5)])
def test_ddpm_step_matches_diffusers(prediction_type, clip_range):
    ns = _schedule(prediction_type, clip_range)
    solver = DDPMSolver(ns)
    ref = DDPMScheduler(**{k: ns[k] for k in SCHEDULE_KEYS})
    ref.set_timesteps(100)
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(3)
    for i, t in enumerate(ref.timesteps):
        state = generator.get_state()
        x = ref.step(fake_output(x, t.expand(3)), t, x, generator=generator).prev_sample
        replay = torch.Generator()
        replay.set_state(state)
        z = torch.randn(SHAPE, generator=replay) if t > 0 else torch.zeros(SHAPE)
        mean, _ = solver.mean_next(fake_output(y, t.expand(3)), torch.full((3,), i), y)
        y = mean + solver.noise_std[i] * z
    assert torch.allclose(x, y, atol=1e-4)


@pytest.mark.parametrize(
    "prediction_type,clip_range,spacing",
    [("sample", 1.0, "leading"), ("sample", 0.7, "trailing"), ("epsilon", 0.7, "leading")],
)
def test_ddim_step_matches_diffusers(prediction_type, clip_range, spacing):
    ns = {**_schedule(prediction_type, clip_range), "timestep_spacing": spacing}
    solver = DDIMSolver(ns, 10)
    ref = DDIMScheduler(
        **{k: ns[k] for k in SCHEDULE_KEYS}, set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing
    )
    ref.set_timesteps(10)
    assert solver.timesteps.tolist() == ref.timesteps.tolist()
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    for i, t in enumerate(ref.timesteps):
        x = ref.step(fake_output(x, t.expand(3)), t, x).prev_sample
        y, _ = solver.mean_next(fake_output(y, t.expand(3)), torch.full((3,), i), y)
    assert torch.allclose(x, y, atol=1e-4)


def test_dpmsolver_step_matches_diffusers_sample_prediction():
    ns = _schedule("sample", clip=False)  # diffusers' DPM-Solver++ has no static clipping
    solver = DPMSolverPP(ns, 10)
    ref = DPMSolverMultistepScheduler(
        **{k: ns[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")},
        algorithm_type="dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
        final_sigmas_type="zero",
    )
    ref.set_timesteps(10)
    x = y = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    x0_prev = None
    for i, t in enumerate(ref.timesteps):
        x = ref.step(fake_output(x, t.expand(3)), t, x).prev_sample
        y, x0_prev = solver.mean_next(fake_output(y, t.expand(3)), torch.full((3,), i), y, x0_prev)
    assert torch.allclose(x, y, atol=1e-4)


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    return ConditionalUnet1D(
        2, global_cond_dim=8, diffusion_step_embed_dim=16, down_dims=(16, 32), kernel_size=3, n_groups=4
    ).eval()


@pytest.mark.parametrize("name", ["paraddpm-100", "paraddim-16", "paradpmsolver-10"])
def test_picard_equals_sequential_for_sample_prediction(network, name):
    ns = _schedule("sample", clip_range=0.8)
    picard = build_sampler({"name": name, "window": 8, "tolerance": 1e-6}, ns)
    sequential = SequentialSampler(picard.solver)
    cond = torch.randn(SHAPE[0], 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn((picard.solver.num_steps + 1, *SHAPE), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = picard.sample(network, cond, SHAPE, noise=noise).sample
        b = sequential.sample(network, cond, SHAPE, noise=noise).sample
    assert torch.allclose(a, b, atol=1e-4)
    assert float(a.abs().max()) <= 0.8 + 1e-6  # sample prediction clips the final x0 at the range


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ValueError, match="prediction_type 'v_prediction'"):
        DDIMSolver(_schedule("v_prediction"), 10)
