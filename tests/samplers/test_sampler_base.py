"""The Sampler base class: its defaults, the shipped samplers' overrides (noise draws bit-identical to
the sequential solvers'), and build_sampler's handling of subclasses and duck-typed objects."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from policy_accel.samplers import (
    PicardSampler,
    SampleOutput,
    Sampler,
    SamplerAdapter,
    SampleStats,
    SequentialSampler,
    StudentSampler,
    as_sampler,
    build_sampler,
)
from policy_accel.samplers.sequential import draw_noise

SHAPE = (2, 16, 2)
STUDENT = "checkpoints/pusht_keypoints_student_2step.safetensors"


class _Zero(Sampler):
    """The smallest sampler: only ``name`` and ``sample``."""

    name = "zero"

    def sample(self, denoiser: Any, cond: torch.Tensor, shape: Any, generator: Any = None, **kwargs: Any):
        return SampleOutput(sample=torch.zeros(shape), stats=SampleStats(nfe=0, rounds=0))


class _Duck:
    """Not a Sampler subclass: a duck-typed object as older code wrote them."""

    name = "duck"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def sample(self, denoiser, cond, shape, generator=None, **kwargs):
        self.calls.append(kwargs)
        return SampleOutput(sample=torch.ones(shape), stats=SampleStats(nfe=1, rounds=1))


def _denoiser(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return 0.1 * x + cond.mean(dim=1)[:, None, None]


def test_sample_is_abstract() -> None:
    class Incomplete(Sampler):
        name = "incomplete"

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


def test_base_defaults() -> None:
    sampler = _Zero()
    assert sampler.to("cpu") is sampler and sampler.to(torch.device("cpu")) is sampler
    assert sampler.compile("freeze") is sampler and sampler.compile(None) is sampler
    assert sampler.check_compatible(20, 2, 16, 2, normalizer=None) is None  # type: ignore[arg-type]
    assert sampler.accepts_initial_guess is False
    assert sampler.needs_calibration is False and sampler.calibration is None
    assert sampler.calibration_settings() == {"name": "zero"}
    with pytest.raises(NotImplementedError, match="zero has nothing to calibrate"):
        sampler.calibrate(_denoiser, torch.zeros(2, 40), SHAPE)


def test_default_initial_noise_is_one_row_of_the_generators_standard_normal() -> None:
    noise = _Zero().initial_noise(SHAPE, torch.Generator().manual_seed(4))
    expected = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(4))
    assert noise.dtype == torch.float32 and torch.equal(noise, expected)
    half = _Zero().initial_noise(SHAPE, torch.Generator().manual_seed(4), dtype=torch.float64)
    assert half.dtype == torch.float64 and half.shape == (1, *SHAPE)


@pytest.mark.parametrize("spec", ["ddpm-10", "ddim-4", "dpmsolver-5", "paraddpm-10", "paraddim-4"])
def test_shipped_samplers_draw_what_the_sequential_solver_draws(spec: str) -> None:
    sampler = build_sampler(spec)
    assert isinstance(sampler, Sampler)
    steps = sampler.solver.num_steps
    noise = sampler.initial_noise(SHAPE, torch.Generator().manual_seed(7))
    assert torch.equal(noise, draw_noise(sampler.solver, SHAPE, torch.Generator().manual_seed(7)))
    assert torch.equal(noise, torch.randn((steps + 1, *SHAPE), generator=torch.Generator().manual_seed(7)))
    # a sample from the generator is the sample from that noise: warm start's first chunk is unchanged
    cond = torch.randn(2, 40, generator=torch.Generator().manual_seed(1))
    drawn = sampler.sample(_denoiser, cond, SHAPE, generator=torch.Generator().manual_seed(7)).sample
    given = sampler.sample(_denoiser, cond, SHAPE, noise=noise).sample
    assert torch.equal(drawn, given)


def test_student_draws_on_its_grid() -> None:
    student = build_sampler({"name": "student", "checkpoint": STUDENT})
    assert isinstance(student, StudentSampler) and isinstance(student, Sampler)
    noise = student.initial_noise(SHAPE, torch.Generator().manual_seed(2))
    assert torch.equal(noise, torch.randn((3, *SHAPE), generator=torch.Generator().manual_seed(2)))
    assert student.to("cpu") is student and student.compile(None) is student


def test_initial_guess_and_calibration_flags() -> None:
    assert build_sampler("ddim-4").accepts_initial_guess is False
    assert build_sampler("ddim-4").needs_calibration is False
    auto = build_sampler({"name": "paraddim", "num_steps": 4, "window": "auto", "auto_candidates": [2, 4]})
    fixed = build_sampler({"name": "paraddim", "num_steps": 4, "window": 2})
    assert isinstance(auto, PicardSampler) and auto.accepts_initial_guess and fixed.accepts_initial_guess
    assert auto.needs_calibration and not fixed.needs_calibration
    cond = torch.zeros(1, 40)
    calibration = auto.calibrate(_denoiser, cond, (1, 16, 2))
    assert calibration["window"] in (2, 4) and auto.calibration is calibration and not auto.needs_calibration


def test_picard_calibration_settings_keep_the_cache_key() -> None:
    sampler = build_sampler({"name": "paraddpm", "num_steps": 10, "window": "auto", "auto_candidates": [2, 4]})
    assert sampler.calibration_settings() == {
        "name": "paraddpm-10",
        "tolerance": 0.1,
        "initial_guess": "extrapolate",
        "iteration": "semilinear",
        "guess": None,
        "max_iterations": None,
        "candidates": [2, 4],
    }


def test_build_sampler_returns_subclasses_as_they_are() -> None:
    sampler = _Zero()
    assert build_sampler(sampler) is sampler and as_sampler(sampler) is sampler
    picard = build_sampler("paraddpm-10")
    assert build_sampler(picard) is picard
    with pytest.raises(ValueError, match="already built"):
        build_sampler(sampler, window=4)


def test_duck_typed_samplers_are_wrapped_with_the_defaults() -> None:
    duck = _Duck()
    wrapped = build_sampler(duck)
    assert isinstance(wrapped, SamplerAdapter) and isinstance(wrapped, Sampler) and wrapped.wrapped is duck
    assert wrapped.name == "duck" and wrapped.accepts_initial_guess is False and not wrapped.needs_calibration
    assert wrapped.to("cpu") is wrapped and wrapped.compile("freeze") is wrapped
    out = wrapped.sample(_denoiser, torch.zeros(2, 40), SHAPE, generator=None, noise=torch.zeros(1, *SHAPE))
    assert torch.equal(out.sample, torch.ones(SHAPE)) and list(duck.calls[0]) == ["noise"]
    assert as_sampler(wrapped) is wrapped  # not wrapped twice


@pytest.mark.parametrize("junk", [3, object(), [1, 2]])
def test_anything_else_is_a_type_error(junk: Any) -> None:
    with pytest.raises(TypeError, match="sampler must be a name, a mapping or a Sampler"):
        build_sampler(junk)


def test_shipped_samplers_subclass_the_base() -> None:
    assert issubclass(SequentialSampler, Sampler) and issubclass(PicardSampler, Sampler)
    assert issubclass(StudentSampler, Sampler)
