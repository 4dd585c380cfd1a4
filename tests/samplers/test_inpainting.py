"""Inpainting (real-time chunking): the held prefix is exact, Picard-with-inpainting is sequential-with-inpainting
at a tiny tolerance, unconstrained sampling is untouched, and the guidance pulls the overlap."""

from __future__ import annotations

import pytest
import torch

from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.model.config import DEFAULT_NOISE_SCHEDULER as NS
from policy_accel.samplers import build_sampler
from policy_accel.samplers.inpainting import InpaintConstraint, rtc_weights
from policy_accel.samplers.solvers import trailing_grid
from policy_accel.samplers.student import StudentSampler

SHAPE = (3, 16, 2)
HARD = 4


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ConditionalUnet1D(
        2, global_cond_dim=8, diffusion_step_embed_dim=16, down_dims=(16, 32), kernel_size=3, n_groups=4
    ).eval()


@pytest.fixture(scope="module")
def denoiser(net):
    return lambda x, t, c: net(x, t, c)


@pytest.fixture(scope="module")
def cond():
    return torch.randn(SHAPE[0], 8, generator=torch.Generator().manual_seed(1))


def constraint(guidance: float = 1.0, hard: int = HARD, end: int = 10) -> InpaintConstraint:
    g = torch.Generator().manual_seed(5)
    target = 0.8 * torch.rand(SHAPE, generator=g) - 0.4
    return InpaintConstraint(target, hard, rtc_weights(hard, end, SHAPE[1]), torch.randn(SHAPE, generator=g), guidance)


def test_rtc_weights_follow_the_exp_schedule():
    w = rtc_weights(2, 6, 10)
    assert w[:2].tolist() == [1.0, 1.0] and w[6:].abs().sum() == 0
    assert bool((w[2:6][1:] < w[2:6][:-1]).all()) and 0 < float(w[5]) < float(w[2]) < 1
    c = torch.tensor(4 / 5, dtype=torch.float64)  # position 2: (6 - 2) / (6 - 2 + 1)
    assert float(w[2]) == pytest.approx(float(c * torch.expm1(c) / (torch.e - 1)), rel=1e-6)
    assert rtc_weights(3, 3, 8)[3:].abs().sum() == 0  # no overlap left beyond the prefix


def test_a_guidance_span_ends_the_decay_after_the_prefix():
    whole, short = rtc_weights(4, 14, 16), rtc_weights(4, 14, 16, span=2)
    assert short[:4].tolist() == [1.0] * 4 and short[6:].abs().sum() == 0 and 0 < float(short[5]) < float(short[4])
    assert torch.equal(short, rtc_weights(4, 6, 16))  # the exp schedule over [hard, hard + span)
    assert torch.equal(rtc_weights(4, 14, 16, span=None), whole) and torch.equal(
        rtc_weights(4, 5, 16, span=3), rtc_weights(4, 5, 16)
    )
    assert rtc_weights(4, 14, 16, span=0)[4:].abs().sum() == 0  # prefix replacement alone
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="span must be an integer"):
            rtc_weights(4, 14, 16, span=bad)


@pytest.mark.parametrize("spec", ["ddpm-100", "ddim-10", "dpmsolver-10", "paraddpm-100", "paraddim-16"])
def test_the_held_prefix_is_exactly_the_committed_actions(denoiser, cond, spec):
    c = constraint()
    out = build_sampler(spec if "para" not in spec else {"name": spec, "window": 8}).sample(
        denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(3), constraint=c
    )
    assert torch.equal(out.sample[:, :HARD], c.target[:, :HARD])
    assert torch.isfinite(out.sample).all()


@pytest.mark.parametrize("kind,steps", [("ddpm", 100), ("ddim", 10), ("dpmsolver", 10), ("ddim", 16)])
@pytest.mark.parametrize("window", [1, 5, "N"])
def test_picard_with_inpainting_equals_sequential_with_inpainting(denoiser, cond, kind, steps, window):
    window = steps if window == "N" else window
    c = constraint()
    reference = build_sampler(f"{kind}-{steps}").sample(
        denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(7), constraint=c
    )
    picard = build_sampler({"name": f"para{kind}", "num_steps": steps, "window": window, "tolerance": 1e-8})
    out = picard.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(7), constraint=c)
    assert out.stats.converged
    assert (out.sample - reference.sample).abs().max() < 1e-4
    # and the constraint changed the answer (the equality is not the unconstrained one)
    free = build_sampler(f"{kind}-{steps}").sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(7))
    assert (free.sample - reference.sample).abs().max() > 1e-2


def test_an_empty_constraint_changes_nothing(denoiser, cond):
    """No prefix, no guidance: the constrained solve is the unconstrained one (Picard's fixed point unchanged)."""
    empty = InpaintConstraint(torch.zeros(SHAPE), 0, torch.zeros(SHAPE[1]), torch.zeros(SHAPE), 1.0)
    for spec in ("ddpm-100", {"name": "paraddpm", "window": 8}):
        free = build_sampler(spec).sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(4))
        held = build_sampler(spec).sample(
            denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(4), constraint=empty
        )
        assert torch.allclose(free.sample, held.sample, atol=1e-6)


def test_guidance_pulls_the_overlap_toward_the_previous_chunk(denoiser, cond):
    replace_only, guided = constraint(guidance=0.0), constraint(guidance=1.0)
    sampler = build_sampler("ddim-10")
    a = sampler.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(9), constraint=replace_only)
    b = sampler.sample(denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(9), constraint=guided)
    overlap = slice(HARD, 10)
    gap_a = (a.sample[:, overlap] - replace_only.target[:, overlap]).abs().mean()
    gap_b = (b.sample[:, overlap] - guided.target[:, overlap]).abs().mean()
    assert gap_b < 0.7 * gap_a


def test_a_student_holds_the_prefix(net, cond):
    from policy_accel.data.normalizer import Normalizer

    config = {"obs_dim": 4, "n_obs_steps": 2, "horizon": 16, "action_dim": 2, "noise_scheduler": dict(NS)}
    student = StudentSampler(net, Normalizer.empty_like({"obs": 4, "action": 2}), config, trailing_grid(100, 2))
    c = constraint()
    out = student.sample(None, cond, SHAPE, generator=torch.Generator().manual_seed(2), constraint=c)
    assert torch.equal(out.sample[:, :HARD], c.target[:, :HARD])


def test_bad_constraints_are_refused_before_any_network_call(cond):
    calls = []

    def counting(x, t, c):
        calls.append(1)
        return torch.zeros_like(x)

    wrong_shape = InpaintConstraint(torch.zeros(1, 16, 2), 2, torch.ones(16), torch.zeros(1, 16, 2))
    with pytest.raises(ValueError, match="chunk shape"):
        build_sampler("ddim-4").sample(counting, cond, SHAPE, constraint=wrong_shape)
    with pytest.raises(TypeError, match="InpaintConstraint"):
        build_sampler({"name": "paraddim", "num_steps": 4, "window": 2}).sample(
            counting, cond, SHAPE, constraint="prefix"
        )
    bad_strength = InpaintConstraint(torch.zeros(SHAPE), 2, torch.ones(16), torch.zeros(SHAPE), guidance=-1.0)
    with pytest.raises(ValueError, match="guidance"):
        build_sampler("ddim-4").sample(counting, cond, SHAPE, constraint=bad_strength)
    assert not calls
