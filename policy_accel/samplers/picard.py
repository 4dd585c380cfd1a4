"""Picard-parallel sampling (ParaDiGMS, Shih et al., NeurIPS 2023) over any :class:`StepSolver`.

A solver's N steps define ``x_{i+1} = x_i + drift_i(x_i) + s_i z_i`` with all noise
``z_i`` drawn up front, so the whole trajectory is the fixed point of

    x_{k+j} = x_k + sum_{i=k}^{k+j-1} (drift_i(x_i) + s_i z_i).

Each *round* evaluates the network on a window of ``window`` consecutive steps as one
batch, rebuilds the window's trajectory from its first point by a cumulative sum, and
measures how far each point moved, scaled by that step's noise variance and the chunk
size. The window then slides past the first point that moved more than ``tolerance**2``:
everything before it was computed from converged inputs and is exact. With a tolerance
of zero this reproduces the sequential solve; with a sensible one it takes far fewer
sequential rounds, which is latency on hardware where a batch of ``window`` rows costs
little more than one.

Points that enter the window have never been evaluated and need a guess. ParaDiGMS
repeats the window's last point; here (``initial_guess="extrapolate"``, the default) they
follow the solver's own update as if the network kept predicting the latest clean-chunk
estimate, with the pre-drawn noise included (no network call). For DDPM, whose every step
adds noise, this roughly halves the rounds (PushT teacher, window 8: 34 -> 16), because
a repeated point lacks all the noise the steps in between would have added.

Batches of observations share one window, which slides by the *worst* sample: the
network call stays one dense batch (no ragged per-sample windows), matching ParaDiGMS;
in a control loop the batch is usually one observation anyway.
"""

from __future__ import annotations

import math
import time
from types import MappingProxyType
from typing import Any, Mapping

import torch

from policy_accel.samplers.base import (
    Denoiser,
    NonFiniteSampleError,
    SampleOutput,
    Sampler,
    SampleStats,
    check_cond,
    check_finite_sample,
)
from policy_accel.samplers.inpainting import InpaintConstraint, check_constraint
from policy_accel.samplers.sequential import draw_noise
from policy_accel.samplers.solvers import StepSolver

INITIAL_GUESSES = ("extrapolate", "repeat")

# The one source of the Picard options' defaults: PicardSampler's signature uses them, and
# configs/sampler/{paraddpm,picard,paraddim,paradpmsolver}.yaml must repeat exactly these values
# (tests/samplers/test_picard_config.py checks), since hydra shows and composes the YAML files.
DEFAULT_WINDOW: int | str = "auto"
DEFAULT_TOLERANCE = 0.1
DEFAULT_MAX_ITERATIONS: int | None = None
DEFAULT_INITIAL_GUESS = "extrapolate"
DEFAULT_DEADLINE_S: float | None = None
PICARD_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "window": DEFAULT_WINDOW,
        "tolerance": DEFAULT_TOLERANCE,
        "max_iterations": DEFAULT_MAX_ITERATIONS,
        "initial_guess": DEFAULT_INITIAL_GUESS,
        "deadline_s": DEFAULT_DEADLINE_S,
    }
)


def _check_options(window: int | str, tolerance: float, max_iterations: int | None) -> None:
    if window != "auto" and (not isinstance(window, int) or isinstance(window, bool) or window < 1):
        raise ValueError(f"window must be an integer >= 1 or 'auto', got {window!r}")
    if (
        not isinstance(tolerance, (int, float))
        or isinstance(tolerance, bool)
        or not tolerance > 0
        or not math.isfinite(tolerance)
    ):
        raise ValueError(f"tolerance must be a positive finite number, got {tolerance!r}")
    if max_iterations is not None and (not isinstance(max_iterations, int) or max_iterations < 1):
        raise ValueError(f"max_iterations must be an integer >= 1, got {max_iterations!r}")


def check_deadline(deadline_s: float | None) -> None:
    """A time budget is a positive finite number of seconds (``None``: no budget)."""
    if deadline_s is None:
        return
    if (
        not isinstance(deadline_s, (int, float))
        or isinstance(deadline_s, bool)
        or not deadline_s > 0
        or not math.isfinite(deadline_s)
    ):
        raise ValueError(f"deadline_s must be a positive finite number of seconds (or None), got {deadline_s!r}")


class PicardSampler(Sampler):
    """ParaDDPM / ParaDDIM / ParaDPMSolver: the solver's steps solved by Picard iteration."""

    accepts_initial_guess = True
    supports_inpainting = True  # the constraint is applied inside every round: same fixed point as sequential

    def __init__(
        self,
        solver: StepSolver,
        window: int | str = DEFAULT_WINDOW,
        tolerance: float = DEFAULT_TOLERANCE,
        max_iterations: int | None = DEFAULT_MAX_ITERATIONS,
        name: str | None = None,
        auto_candidates: tuple[int, ...] | None = None,
        deadline_s: float | None = DEFAULT_DEADLINE_S,
        initial_guess: str = DEFAULT_INITIAL_GUESS,
    ) -> None:
        _check_options(window, tolerance, max_iterations)
        if initial_guess not in INITIAL_GUESSES:
            raise ValueError(f"initial_guess must be one of {INITIAL_GUESSES}, got {initial_guess!r}")
        self.initial_guess = initial_guess
        check_deadline(deadline_s)
        self.deadline_s = deadline_s  # default time budget per chunk; a call's deadline_s overrides it
        self.solver = solver
        self.window = window
        self.tolerance = float(tolerance)
        self.max_iterations = max_iterations
        self.name = name or f"para{solver.name}-{solver.num_steps}"
        self.auto_candidates = auto_candidates
        self.calibration: dict[str, Any] | None = None  # filled when window="auto" resolves
        # Tolerance scale of trajectory point k (k = 1..N): the noise variance of the step leaving
        # it, as ParaDiGMS. The last step lands on a clean sample with variance 0, which would make
        # any rounding error at point N-1 "too large" and cost an extra round; it borrows the
        # variance of the step before instead.
        variance = solver.coef.noise_var.clone().double()
        if len(variance) > 1:
            variance[-1] = variance[-2]
        self._inv_scale = 1.0 / torch.cat([variance[1:], variance[-1:]])

    def initial_noise(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """x_T and every step's noise, ``(num_steps + 1, *shape)``, as the sequential solver draws them."""
        return draw_noise(self.solver, shape, generator, dtype, device)

    # ---------------------------------------------------------------- window
    @property
    def needs_calibration(self) -> bool:
        """``window="auto"`` not yet resolved: the next sample() would calibrate first."""
        return self.window == "auto" and self.calibration is None

    def calibration_settings(self) -> dict[str, Any]:
        """What the window choice depends on besides machine, model and shape (the cache key)."""
        return {
            "name": self.name,
            "tolerance": self.tolerance,
            "initial_guess": self.initial_guess,
            "max_iterations": self.max_iterations,
            "candidates": list(self.auto_candidates or []),
        }

    def resolved_window(self) -> int:
        if self.window == "auto":
            if self.calibration is None:
                raise RuntimeError("window='auto' is resolved on the first sample() call")
            return int(self.calibration["window"])
        return min(int(self.window), self.solver.num_steps)

    def calibrate(
        self, denoiser: Denoiser, cond: torch.Tensor, shape: tuple[int, int, int], repeats: int = 2
    ) -> dict[str, Any]:
        """Choose the window that minimises measured latency on this machine.

        For each candidate window, time full Picard solves of this conditioning (best of
        ``repeats``, after one warm-up) and count their rounds; the batch-cost curve
        (seconds per round at each window) is what makes the choice machine-specific.
        """
        from policy_accel.samplers.window_calibration import calibrate_window

        self.calibration = calibrate_window(self, denoiser, cond, shape, repeats=repeats)
        return self.calibration

    # ---------------------------------------------------------------- sample
    @torch.inference_mode()
    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        init_trajectory: torch.Tensor | None = None,
        deadline_s: float | None = None,
        window: int | None = None,
        constraint: InpaintConstraint | None = None,
        **_: Any,
    ) -> SampleOutput:
        """Sample a chunk. ``noise`` (N+1, B, T, D) fixes all randomness (row 0 is x_T);
        ``init_trajectory`` (N+1, B, T, D) is the initial guess of every point (a warm
        start; row 0 is ignored), default x_T everywhere; ``deadline_s`` stops at a time
        budget and returns the best current estimate; ``constraint`` holds a committed prefix at every
        trajectory point and guides each row's clean-chunk estimate (real-time chunking, inpainting.py)."""
        check_cond(cond, shape)
        solver, n = self.solver, self.solver.num_steps
        if noise is None:
            noise = draw_noise(solver, shape, generator, cond.dtype, cond.device)
        elif tuple(noise.shape) != (n + 1, *shape):
            raise ValueError(f"noise must have shape {(n + 1, *shape)}, got {tuple(noise.shape)}")
        if init_trajectory is not None and tuple(init_trajectory.shape) != (n + 1, *shape):
            raise ValueError(f"init_trajectory must have shape {(n + 1, *shape)}, got {tuple(init_trajectory.shape)}")
        deadline_s = self.deadline_s if deadline_s is None else deadline_s
        check_deadline(deadline_s)
        if window is None:
            if self.needs_calibration:
                self.calibrate(denoiser, cond, shape)
            window = self.resolved_window()
        _check_options(window, self.tolerance, self.max_iterations)
        if constraint is not None:
            constraint = check_constraint(constraint, shape, noise)
        return self._solve(denoiser, cond, shape, noise, init_trajectory, min(window, n), deadline_s, constraint)

    def _solve(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        noise: torch.Tensor,
        init_trajectory: torch.Tensor | None,
        window: int,
        deadline_s: float | None,
        constraint: InpaintConstraint | None = None,
    ) -> SampleOutput:
        start_time = time.perf_counter()
        solver, n = self.solver, self.solver.num_steps
        batch = shape[0]
        max_rounds = min(self.max_iterations or n, n)
        tol2 = self.tolerance**2
        dim = shape[1] * shape[2]

        trajectory = torch.empty((n + 1, *shape), dtype=noise.dtype, device=noise.device)
        trajectory[0] = noise[0]
        step_noise = (solver.noise_std.to(noise)[:, None, None, None] * noise[1:]) if solver.stochastic else None
        extrapolate = self.initial_guess == "extrapolate"
        fill_ahead = init_trajectory is None  # a caller's guess is kept as given
        if init_trajectory is not None:
            trajectory[1:] = init_trajectory[1:]
        elif extrapolate:  # no clean-chunk estimate yet: the normalised actions' centre, 0
            trajectory[1:] = solver.extrapolate(noise[0], 0, n, torch.zeros_like(noise[0]), step_noise)
        else:
            trajectory[1:] = noise[0]
        point_abar = solver.point_abar
        if constraint is not None:  # the prefix of every point is known: it never moves, so its error is 0
            constraint.hold_points(trajectory, point_abar)
        x0_buffer = torch.zeros((n, *shape), dtype=noise.dtype, device=noise.device) if solver.uses_prev_x0 else None
        inv_scale = (self._inv_scale / dim).to(noise)
        step_ids = torch.arange(n, device=noise.device)
        timesteps = solver.tables(noise.device)[0]
        cond_rows = cond.repeat(window, 1)

        begin, rounds, nfe, final_error, hit_deadline = 0, 0, 0, 0.0, False
        last_x0 = None
        while begin < n and rounds < max_rounds:
            end = min(begin + window, n)
            length = end - begin
            rows = trajectory[begin:end]
            index = step_ids[begin:end].repeat_interleave(batch)
            flat = rows.reshape(length * batch, *shape[1:])
            eps = denoiser(flat, timesteps[index], cond_rows[: length * batch])
            x0 = solver.predict_x0(eps, index, flat)
            if constraint is not None:
                x0 = constraint.guide(x0)
            x0_prev = None
            if x0_buffer is not None:
                window_x0 = x0.reshape(length, *shape)
                previous = x0_buffer[begin - 1 : begin] if begin > 0 else torch.zeros_like(window_x0[:1])
                x0_prev = torch.cat([previous, window_x0[:-1]]).reshape_as(x0)
                x0_buffer[begin:end] = window_x0
            drift = (solver.combine(x0, eps, index, flat, x0_prev) - flat).reshape(length, *shape)
            if step_noise is not None:
                drift = drift + step_noise[begin:end]
            updated = trajectory[begin] + drift.cumsum(0)
            if constraint is not None:
                constraint.hold_points(updated, point_abar[begin + 1 : end + 1])
            error = (updated - trajectory[begin + 1 : end + 1]).square().sum(dim=(-1, -2)) * inv_scale[begin:end, None]
            trajectory[begin + 1 : end + 1] = updated
            last_x0 = x0.reshape(length, *shape)[-1]
            rounds, nfe = rounds + 1, nfe + length

            # One device-to-host transfer per round: where to slide, whether all is finite, the error kept.
            bad = ~(error <= tol2).all(dim=1)  # NaN counts as bad
            first_bad_t = torch.where(bad.any(), bad.int().argmax(), step_ids.new_full((), length))
            kept = torch.where(step_ids[:length] < first_bad_t, error.amax(dim=1), error.new_zeros(()))
            first_bad_f, finite, kept_max = torch.stack(
                [first_bad_t.to(error.dtype), torch.isfinite(error).all().to(error.dtype), kept.max()]
            ).tolist()
            if not finite:
                raise NonFiniteSampleError(
                    f"sampler {self.name}: the network returned NaN/inf at denoising steps {begin}..{end - 1} "
                    "(is the observation far outside the range the policy was trained on?)"
                )
            first_bad = int(first_bad_f)
            final_error = kept_max**0.5 if first_bad else 0.0
            advance = min(first_bad + 1, length)
            new_end = min(begin + advance + window, n)
            if fill_ahead and new_end > end:  # points entering the window were never evaluated
                if extrapolate:  # follow the latest clean-chunk estimate, with the right noise
                    trajectory[end + 1 : new_end + 1] = solver.extrapolate(
                        trajectory[end], end, new_end - end, last_x0, step_noise
                    )
                else:  # ParaDiGMS: repeat the window's last point
                    trajectory[end + 1 : new_end + 1] = trajectory[end]
                if constraint is not None:
                    constraint.hold_points(trajectory[end + 1 : new_end + 1], point_abar[end + 1 : new_end + 1])
            begin += advance
            if deadline_s is not None and begin < n and time.perf_counter() - start_time > deadline_s:
                hit_deadline = True
                break

        converged = begin >= n
        if converged or end == n:
            sample = trajectory[n].clone()
        else:  # stopped early before the window reached the last step: the network's clean-chunk guess
            sample = last_x0.clone()
        if constraint is not None:  # the committed prefix, exactly (a converged solve has it already)
            sample = constraint.hold(sample, 1.0)
        check_finite_sample(sample, self.name)
        stats = SampleStats(
            nfe=nfe,
            rounds=rounds,
            final_error=final_error,
            converged=converged,
            hit_deadline=hit_deadline,
            extra={"window": window, "tolerance": self.tolerance, "steps": n},
        )
        return SampleOutput(sample=sample, stats=stats, trajectory=trajectory)
