"""Issue 23: large windows, the semilinear iteration, the student's guess and per-sample windows in a batch.

Every variant (iteration x initial guess) keeps Picard's fixed point: at a tiny tolerance it returns the
sequential sample, each sample of a batch its own sequential run, whatever the window. On the shipped
teacher the rounds no longer grow with the window.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from helpers.paths import CHECKPOINTS, TEACHER

from policy_accel.samplers import PicardSampler, build_sampler
from policy_accel.samplers.base import SampleOutput, Sampler, SampleStats
from policy_accel.samplers.inpainting import InpaintConstraint, rtc_weights
from policy_accel.samplers.sequential import draw_noise
from policy_accel.samplers.solvers import DDPMSolver

SHAPE = (3, 16, 2)
STUDENT_1STEP = CHECKPOINTS / "pusht_keypoints_student_1step.safetensors"


class FixedGuess(Sampler):
    """A stand-in student: always the same (deliberately poor) clean chunk, per sample."""

    name = "fixed-guess"
    num_steps = 1

    def __init__(self, value: float = 0.7) -> None:
        self.value = value
        self.calls = 0

    def sample(self, denoiser: Any, cond: torch.Tensor, shape: tuple[int, int, int], generator=None, **kwargs: Any):
        self.calls += 1
        chunk = torch.full(shape, self.value) * torch.linspace(-1, 1, shape[1])[None, :, None]
        return SampleOutput(sample=chunk, stats=SampleStats(nfe=1, rounds=1))


def _picard(kind: str, steps: int, **options: Any) -> PicardSampler:
    guess = options.pop("guess", None)
    sampler = build_sampler({"name": f"para{kind}", "num_steps": steps, **options})
    if guess is not None:  # a student guess without a checkpoint: the same sampler, another guess sampler
        sampler = PicardSampler(
            sampler.solver,
            window=sampler.window,
            tolerance=sampler.tolerance,
            iteration=sampler.iteration,
            initial_guess="student",
            guess_sampler=guess,
        )
    return sampler


VARIANTS = [
    ("semilinear", "extrapolate"),
    ("semilinear", "repeat"),
    ("semilinear", "student"),
    ("picard", "extrapolate"),
    ("picard", "student"),
]


@pytest.mark.parametrize(("iteration", "guess"), VARIANTS)
@pytest.mark.parametrize(("kind", "steps"), [("ddpm", 100), ("ddim", 16), ("dpmsolver", 10)])
@pytest.mark.parametrize("window", [3, 32, 64])
def test_every_variant_reproduces_each_samples_sequential_run(denoiser, cond, kind, steps, iteration, guess, window):
    """Tiny tolerance: every sample of the batch equals its *own* batch-1 sequential run, at any window."""
    options = {"window": window, "tolerance": 1e-8, "iteration": iteration}
    if guess == "student":
        options["guess"] = FixedGuess()
    else:
        options["initial_guess"] = guess
    picard = _picard(kind, steps, **options)
    noise = draw_noise(picard.solver, SHAPE, torch.Generator().manual_seed(7))
    out = picard.sample(denoiser, cond, SHAPE, noise=noise)
    sequential = build_sampler(f"{kind}-{steps}")
    for b in range(SHAPE[0]):
        alone = sequential.sample(denoiser, cond[b : b + 1], (1, *SHAPE[1:]), noise=noise[:, b : b + 1])
        assert (out.sample[b] - alone.sample[0]).abs().max() < 1e-4, f"sample {b}"
    assert out.stats.converged and out.stats.rounds <= steps
    assert out.stats.rounds == max(out.stats.extra["sample_rounds"])


def test_a_sample_that_converged_stops_costing_network_rows(denoiser, cond):
    """Per-sample windows: a sample whose solve is done drops out of the network call; the rows evaluated
    are the sum of each sample's own window lengths, and each sample's rounds match its batch-1 solve."""
    picard = build_sampler({"name": "paraddpm", "window": 16, "tolerance": 0.1})
    noise = draw_noise(picard.solver, SHAPE, torch.Generator().manual_seed(9))
    rows_per_call: list[int] = []

    def counting(x, t, c):
        rows_per_call.append(x.shape[0])
        return denoiser(x, t, c)

    out = picard.sample(counting, cond, SHAPE, noise=noise)
    alone = [
        picard.sample(denoiser, cond[b : b + 1], (1, *SHAPE[1:]), noise=noise[:, b : b + 1]).stats for b in range(3)
    ]
    assert out.stats.extra["sample_rounds"] == [s.rounds for s in alone]
    assert out.stats.rounds == max(s.rounds for s in alone) == len(rows_per_call)
    assert out.stats.extra["network_rows"] == sum(rows_per_call) == sum(s.nfe for s in alone)
    assert min(rows_per_call) < max(rows_per_call)  # the batch shrank as samples finished
    assert out.stats.extra["sample_rounds_mean"] == pytest.approx(sum(s.rounds for s in alone) / 3)


def test_batch_one_is_the_single_window_algorithm(denoiser, cond):
    """With one observation every round evaluates ``min(window, remaining)`` rows from its own begin."""
    picard = build_sampler({"name": "paraddpm", "window": 8, "tolerance": 0.1})
    steps_seen: list[list[int]] = []

    def recording(x, t, c):
        steps_seen.append(t.tolist())
        return denoiser(x, t, c)

    picard.sample(recording, cond[:1], (1, *SHAPE[1:]), generator=torch.Generator().manual_seed(3))
    timesteps = picard.solver.timesteps.tolist()
    for call in steps_seen:
        first = timesteps.index(call[0])
        assert call == timesteps[first : first + len(call)] and len(call) == min(8, 100 - first)


@pytest.mark.parametrize("iteration", ["semilinear", "picard"])
def test_inpainting_holds_in_batches_with_per_sample_windows(denoiser, cond, iteration):
    """The constrained Picard solve of a batch is each sample's constrained sequential solve (tiny tolerance)."""
    picard = build_sampler({"name": "paraddpm", "window": 32, "tolerance": 1e-8, "iteration": iteration})
    noise = draw_noise(picard.solver, SHAPE, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(6)
    target = torch.randn(SHAPE, generator=gen).clamp(-1, 1)
    constraint = InpaintConstraint(target, 3, rtc_weights(3, 10, SHAPE[1]), torch.randn(SHAPE, generator=gen))
    out = picard.sample(denoiser, cond, SHAPE, noise=noise, constraint=constraint)
    sequential = build_sampler("ddpm")
    for b in range(SHAPE[0]):
        own = InpaintConstraint(target[b : b + 1], 3, constraint.weights, constraint.noise[b : b + 1])
        alone = sequential.sample(denoiser, cond[b : b + 1], (1, *SHAPE[1:]), noise=noise[:, b : b + 1], constraint=own)
        assert (out.sample[b] - alone.sample[0]).abs().max() < 1e-4
    assert torch.equal(out.sample[:, :3], target[:, :3])


def test_extrapolate_rows_matches_extrapolate_per_sample():
    solver = DDPMSolver({})
    gen = torch.Generator().manual_seed(0)
    x, x0 = torch.randn(SHAPE, generator=gen), torch.randn(SHAPE, generator=gen)
    step_noise = torch.randn((100, *SHAPE), generator=gen) * 0.1
    start = torch.tensor([0, 40, 97])
    rows = solver.extrapolate_rows(x, start, 5, x0, step_noise)
    for b, s in enumerate(start.tolist()):
        count = min(5, 100 - s)
        single = solver.extrapolate(x[b], s, count, x0[b], step_noise[:, b])
        assert torch.allclose(rows[:count, b], single, atol=1e-6)


def test_student_guess_options_are_checked():
    with pytest.raises(ValueError, match="guess_checkpoint"):
        build_sampler({"name": "paraddpm", "initial_guess": "student"})  # no checkpoint, no policy to default from
    with pytest.raises(ValueError, match="guess_checkpoint only applies"):
        build_sampler({"name": "paraddpm", "guess_checkpoint": str(STUDENT_1STEP)})
    with pytest.raises(ValueError, match="iteration"):
        build_sampler({"name": "paraddpm", "iteration": "newton"})
    built = build_sampler({"name": "paraddpm", "initial_guess": "student", "guess_checkpoint": str(STUDENT_1STEP)})
    assert built.guess_sampler is not None and built.guess_sampler.source == str(STUDENT_1STEP)


@pytest.fixture(scope="module")
def teacher():
    from policy_accel.policy.loading import load_policy

    return load_policy(TEACHER)


def _teacher_conds(policy, count: int) -> torch.Tensor:
    """Conditioning of ``count`` PushT reset observations (seeds 100000...)."""
    import gymnasium as gym

    import policy_accel.envs  # noqa: F401  (registers the gymnasium ids)

    env = gym.make("policy_accel/PushT-v0", obs_type=policy.config.obs_type)
    rows = []
    for seed in range(100000, 100000 + count):
        obs, _ = env.reset(seed=seed)
        rows.append(torch.as_tensor(obs, dtype=torch.float32).expand(policy.config.n_obs_steps, -1))
    env.close()
    return policy.normalizer.normalize("obs", torch.stack(rows)).flatten(1)


def test_the_policy_defaults_the_guess_to_its_shipped_student(teacher):
    teacher.set_sampler({"name": "paraddpm", "window": 32, "initial_guess": "student"})
    try:
        assert teacher.sampler.guess_sampler.source == str(STUDENT_1STEP)
        chunk = teacher.predict_action_chunk(torch.zeros(1, teacher.config.n_obs_steps, teacher.config.obs_dim))
        assert chunk.shape == (1, teacher.config.horizon, teacher.config.action_dim)
        assert teacher.last_stats.extra["guess_nfe"] == 1 and teacher.last_stats.converged
    finally:
        teacher.set_sampler("ddpm")


def test_student_guess_on_the_teacher_keeps_the_sequential_sample(teacher):
    """The real student's guess changes the start, not the fixed point."""
    cond = _teacher_conds(teacher, 2)
    shape = (2, teacher.config.horizon, teacher.config.action_dim)
    picard = build_sampler(
        {
            "name": "paraddpm",
            "window": 32,
            "tolerance": 1e-6,
            "initial_guess": "student",
            "guess_checkpoint": str(STUDENT_1STEP),
        }
    )
    noise = draw_noise(picard.solver, shape, torch.Generator().manual_seed(4))
    reference = build_sampler("ddpm").sample(teacher.denoise, cond, shape, noise=noise)
    out = picard.sample(teacher.denoise, cond, shape, noise=noise)
    assert out.stats.converged and (out.sample - reference.sample).abs().max() < 1e-4


def test_rounds_do_not_grow_with_the_window_on_the_shipped_teacher(teacher):
    """Issue 23: past window 16 ParaDDPM-100's rounds grew (Picard: 12.4 at 16, 18.0 at 32, 18.9 at 64 on 20
    demo observations); the semilinear iteration's fall toward n / window. Three observations here, batched
    (per-sample windows: each sample's rounds are its own)."""
    cond = _teacher_conds(teacher, 3)
    shape = (3, teacher.config.horizon, teacher.config.action_dim)
    mean_rounds = {}
    for window in (16, 32, 64):
        picard = build_sampler({"name": "paraddpm", "window": window})
        noise = draw_noise(picard.solver, shape, torch.Generator().manual_seed(1))
        out = picard.sample(teacher.denoise, cond, shape, noise=noise)
        mean_rounds[window] = out.stats.extra["sample_rounds_mean"]
    assert mean_rounds[64] <= mean_rounds[32] <= mean_rounds[16] <= 12, mean_rounds
    assert mean_rounds[32] <= 8, mean_rounds
