"""The baseline: one network call per solver step, in order (DDPM-100, DDIM-k, DPM-Solver-k)."""

from __future__ import annotations

from typing import Any

import torch

from policy_accel.samplers.base import (
    Denoiser,
    SampleOutput,
    Sampler,
    SampleStats,
    check_cond,
    check_finite_sample,
    standard_normal,
)
from policy_accel.samplers.inpainting import InpaintConstraint, check_constraint
from policy_accel.samplers.solvers import StepSolver


def draw_noise(
    solver: StepSolver,
    shape: tuple[int, int, int],
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Initial noise and every step's noise, drawn up front in one call: ``(steps + 1, B, T, D)``.

    Drawing everything first makes a stochastic solve a deterministic function of this
    tensor, so sequential and Picard samplers given the same generator return the same chunk.
    Deterministic solvers only use row 0, but draw the same tensor so both kinds consume
    the generator identically. The draws come from the generator's own device and are then
    moved, so a seeded CPU generator gives the same noise whatever device samples.
    """
    return standard_normal((solver.num_steps + 1, *shape), generator, dtype, device)


class SequentialSampler(Sampler):
    """Run ``solver`` step by step: ``num_steps`` rounds, one network evaluation each."""

    supports_inpainting = True

    def __init__(self, solver: StepSolver, name: str | None = None) -> None:
        self.solver = solver
        self.name = name or f"{solver.name}-{solver.num_steps}"

    def initial_noise(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """x_T and every step's noise, ``(num_steps + 1, *shape)`` (see :func:`draw_noise`)."""
        return draw_noise(self.solver, shape, generator, dtype, device)

    @torch.inference_mode()
    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        constraint: InpaintConstraint | None = None,
        **unsupported: Any,
    ) -> SampleOutput:
        """``constraint``: hold a committed prefix and guide the overlap (real-time chunking, see inpainting.py)."""
        if unsupported:
            raise TypeError(
                f"sampler {self.name} does not take {sorted(unsupported)} "
                "(deadlines and initial guesses need a Picard sampler)"
            )
        check_cond(cond, shape)
        solver = self.solver
        if noise is None:
            noise = draw_noise(solver, shape, generator, cond.dtype, cond.device)
        elif noise.shape != (solver.num_steps + 1, *shape):
            raise ValueError(f"noise must have shape {(solver.num_steps + 1, *shape)}, got {tuple(noise.shape)}")
        noise_std = solver.noise_std.to(noise)
        timesteps = solver.tables(noise.device)[0]
        x, x0 = noise[0], None
        batch = shape[0]
        if constraint is not None:
            constraint = check_constraint(constraint, shape, noise)
            x = constraint.hold(x, solver.point_abar[0])
        for i in range(solver.num_steps):
            index = torch.full((batch,), i, dtype=torch.long, device=noise.device)
            eps = denoiser(x, timesteps[index], cond)
            if constraint is None:
                x, x0 = solver.mean_next(eps, index, x, x0)
            else:  # the guided clean-chunk estimate drives the step (and is the multistep solver's x0_prev)
                guided = constraint.guide(solver.predict_x0(eps, index, x))
                x, x0 = solver.combine(guided, eps, index, x, x0), guided
            if solver.stochastic:
                x = x + noise_std[i] * noise[i + 1]
            if constraint is not None:
                x = constraint.hold(x, solver.point_abar[i + 1])
        check_finite_sample(x, self.name)
        stats = SampleStats(nfe=solver.num_steps, rounds=solver.num_steps)
        return SampleOutput(sample=x, stats=stats)
