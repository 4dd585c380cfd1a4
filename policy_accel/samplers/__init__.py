"""Samplers: every way of turning noise into an action chunk, behind one protocol."""

from __future__ import annotations

from typing import Any, Mapping

from policy_accel.samplers.base import Denoiser, SampleOutput, SampleStats, Sampler
from policy_accel.samplers.sequential import SequentialSampler
from policy_accel.samplers.solvers import DEFAULT_NOISE_SCHEDULER, DDIMSolver, DDPMSolver, StepSolver

SOLVERS = {"ddpm": DDPMSolver, "ddim": DDIMSolver}
SAMPLER_KINDS = ("ddpm", "ddim")


def build_sampler(spec: str | Mapping[str, Any] | Sampler,
                  noise_scheduler: Mapping[str, Any] | None = None) -> Sampler:
    """A sampler from a name (``"ddpm"``, ``"ddim-10"``), a config mapping
    (``{"name": "ddim", "num_steps": 16}``) or an existing sampler object."""
    if isinstance(spec, Sampler) and not isinstance(spec, (str, Mapping)):
        return spec
    if isinstance(spec, str):
        kind, _, steps = spec.partition("-")
        options: dict[str, Any] = {"name": kind}
        if steps:
            if not steps.isdigit():
                raise ValueError(f"sampler '{spec}': step count '{steps}' is not an integer")
            options["num_steps"] = int(steps)
    elif isinstance(spec, Mapping):
        options = dict(spec)
    else:
        raise TypeError(f"sampler must be a name, a mapping or a Sampler, got {type(spec).__name__}")
    kind = options.pop("name", None)
    if kind not in SAMPLER_KINDS:
        raise ValueError(f"unknown sampler '{kind}'; choose one of {list(SAMPLER_KINDS)}")
    schedule = dict(noise_scheduler or DEFAULT_NOISE_SCHEDULER)
    label = options.pop("label", None)
    solver: StepSolver = SOLVERS[kind](schedule, **options)
    return SequentialSampler(solver, name=label)


__all__ = ["Denoiser", "SampleOutput", "SampleStats", "Sampler", "SequentialSampler", "build_sampler"]
