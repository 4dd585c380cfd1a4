"""Picard's accuracy at the shipped tolerance (0.1), not only in the tolerance -> 0 limit.

The sliding rule (samplers/picard.py) accepts trajectory point k once its last update moved it by at most
``tolerance * sqrt(var_k * dim)`` (L2 over the chunk), ``var_k`` being the noise variance of the step leaving
point k; the last point, whose step lands on a clean sample (variance 0), borrows the variance of the step
before. So the returned chunk x_N is accepted within ``tolerance * sigma_N * sqrt(dim)`` of where one more
round would put it, sigma_N = sqrt(noise_var[N-2]). Error accepted at earlier points carries forward: for the
trained teacher, whose steps contract, the distance from the sequential sample (same noise) stays within
that one-tolerance bound; for an untrained random net, whose steps amplify differences, within 4 times it
(Picard's cumulative sum) or 8 times it (the semilinear iteration, the default: its rebuilt points carry
the network's part of the accepted error with the step's gain taken out, ``J - g`` instead of ``J - 1``,
which is larger where the network's output barely depends on x; measured 5-9 on this net over six noise
seeds against Picard's 1.4-4.4, and 0.06 on the teacher). A 100x looser tolerance breaks both (and ``final_error``, the largest accepted movement of the last round
in tolerance units, then exceeds the tolerance).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers.paths import TEACHER

from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.samplers import build_sampler
from policy_accel.samplers.sequential import draw_noise

SHIPPED_TOLERANCE = 0.1
SOLVERS = [("ddpm", 100), ("ddim", 16), ("dpmsolver", 10)]
WINDOW = 8
# accepted error carried to the last point, per problem and iteration (see the docstring)
AMPLIFICATION = {("teacher", "semilinear"): 1.0, ("teacher", "picard"): 1.0, ("tiny", "picard"): 4.0}
AMPLIFICATION[("tiny", "semilinear")] = 8.0
ITERATIONS = ("semilinear", "picard")


@pytest.fixture(scope="module")
def problems():
    """The shipped PushT teacher on a real first observation, and a tiny random U-Net on random conditioning."""
    import gymnasium as gym

    import policy_accel
    import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

    policy = policy_accel.load(TEACHER)
    env = gym.make("policy_accel/PushT-v0", obs_type=policy.config.obs_type)
    obs, _ = env.reset(seed=100000)
    env.close()
    history = torch.as_tensor(obs, dtype=torch.float32).expand(1, policy.config.n_obs_steps, -1)
    teacher_cond = policy.normalizer.normalize("obs", history).flatten(1)
    torch.manual_seed(0)
    net = ConditionalUnet1D(
        2, global_cond_dim=8, diffusion_step_embed_dim=16, down_dims=(16, 32), kernel_size=3, n_groups=4
    ).eval()
    return {
        "teacher": (policy.denoise, teacher_cond, (1, policy.config.horizon, policy.config.action_dim)),
        "tiny": (
            lambda x, t, c: net(x, t, c),
            torch.randn(3, 8, generator=torch.Generator().manual_seed(1)),
            (3, 16, 2),
        ),
    }


def _distance_in_tolerance_units(picard, sample: torch.Tensor, reference: torch.Tensor) -> float:
    """Worst per-observation L2 distance of the chunk, over ``sigma_N * sqrt(dim)``: the unit the tolerance is in."""
    variance = picard.solver.coef.noise_var.double()
    sigma_n = float(variance[-2].sqrt())  # the last point borrows the variance of the step before
    dim = sample.shape[1] * sample.shape[2]
    per_obs = (sample.double() - reference.double()).square().sum(dim=(1, 2)).sqrt()
    return float(per_obs.max()) / (sigma_n * math.sqrt(dim))


def _solve(problem, kind: str, steps: int, **options):
    denoiser, cond, shape = problem
    picard = build_sampler({"name": f"para{kind}", "num_steps": steps, "window": WINDOW, **options})
    noise = draw_noise(picard.solver, shape, torch.Generator().manual_seed(3), cond.dtype, cond.device)
    reference = build_sampler(f"{kind}-{steps}").sample(denoiser, cond, shape, noise=noise)
    out = picard.sample(denoiser, cond, shape, noise=noise)
    return picard, out, _distance_in_tolerance_units(picard, out.sample, reference.sample)


@pytest.mark.parametrize("iteration", ITERATIONS)
@pytest.mark.parametrize("problem", ["teacher", "tiny"])
@pytest.mark.parametrize(("kind", "steps"), SOLVERS)
def test_picard_at_the_shipped_tolerance_stays_near_the_sequential_sample(problems, problem, kind, steps, iteration):
    picard, out, distance = _solve(problems[problem], kind, steps, iteration=iteration)  # the default tolerance
    assert picard.tolerance == SHIPPED_TOLERANCE
    assert out.stats.converged and out.stats.rounds < steps  # the loose regime: the window did slide ahead
    # what the sampler reports it met: the last round's accepted points moved at most the tolerance
    assert 0.0 <= out.stats.final_error <= SHIPPED_TOLERANCE
    assert out.stats.extra["tolerance"] == SHIPPED_TOLERANCE
    bound = AMPLIFICATION[(problem, iteration)] * SHIPPED_TOLERANCE
    assert distance <= bound, f"{kind}: chunk {distance:.3f} sigma_N from the sequential one, bound {bound}"


@pytest.mark.parametrize("iteration", ITERATIONS)
@pytest.mark.parametrize(("kind", "steps"), SOLVERS)
def test_a_100x_looser_tolerance_breaks_the_bound_on_the_teacher(problems, kind, steps, iteration):
    """The bound above is tight enough to tell the shipped tolerance from a 100x looser one."""
    _, out, distance = _solve(problems["teacher"], kind, steps, tolerance=100 * SHIPPED_TOLERANCE, iteration=iteration)
    assert out.stats.converged
    bound = AMPLIFICATION[("teacher", iteration)] * SHIPPED_TOLERANCE
    assert distance > bound or out.stats.final_error > SHIPPED_TOLERANCE


def test_tightening_the_tolerance_tightens_the_sample(problems):
    """final_error and the distance from the sequential sample follow the tolerance down."""
    distances = []
    for tolerance in (SHIPPED_TOLERANCE, SHIPPED_TOLERANCE / 100):
        _, out, distance = _solve(problems["teacher"], "ddpm", 100, tolerance=tolerance)
        assert out.stats.final_error <= tolerance and distance <= AMPLIFICATION[("teacher", "semilinear")] * tolerance
        distances.append(distance)
    assert distances[1] < distances[0]
