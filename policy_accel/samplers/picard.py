"""Picard-parallel sampling (ParaDiGMS, Shih et al., NeurIPS 2023) over any :class:`StepSolver`.

A solver's N steps define ``x_{i+1} = step_i(x_i) + s_i z_i`` with all noise ``z_i`` drawn up front, so
the whole trajectory is the fixed point of those N equations. Each *round* evaluates the network on a
window of ``window`` consecutive steps as one batch, rebuilds the window's trajectory from its first
point, and measures how far each point moved, scaled by that step's noise variance and the chunk size.
The window then slides past the first point that moved more than ``tolerance**2``: everything before it
was computed from converged inputs and is exact. With a tolerance of zero this reproduces the sequential
solve; with a sensible one it takes far fewer sequential rounds, which is latency on hardware where a
batch of ``window`` rows costs little more than one.

How a round rebuilds the window (``iteration``):

* ``"picard"`` (ParaDiGMS): ``x_{k+j} = x_k + sum_i (step_i(x_i) - x_i + s_i z_i)``, a cumulative sum of
  the drifts evaluated at last round's points;
* ``"semilinear"`` (default): every step is ``x_{i+1} = g_i x_i + c_i`` where ``g_i`` is the step's gain
  on ``x`` with the network's clean-chunk prediction held fixed (DDPM: the posterior mean's weight on
  x_t) and ``c_i = step_i(x_i) - g_i x_i + s_i z_i`` the rest, taken from last round's points; the round
  re-solves that linear recurrence along the window (a scan, no network call). Only the network's output
  lags a round; Picard also lags the linear part, whose stale errors pile up along a long window. Same
  fixed point (``c_i`` is exact once ``x_i`` is), same acceptance rule. On the PushT teacher (DDPM-100,
  20 demo observations) mean rounds at windows 8/16/32/64 fall from 15.2/12.4/18.0/18.9 (Picard) to
  14.3/8.5/6.4/5.4, and ParaDDIM-16 at window 16 from 6.0 to 3.0 (``scripts/picard_rounds.py``).

Points that enter a window have never been evaluated and need a guess (``initial_guess``). ParaDiGMS
repeats the window's last point (``"repeat"``); ``"extrapolate"`` (the default) follows the solver's own
update as if the network kept predicting the latest clean-chunk estimate, with the pre-drawn noise
included (no network call); ``"student"`` does the same but starts from a distilled student's clean
chunk (one call of its smaller network, ``guess_checkpoint``) instead of the centre of the actions, which
saves the first rounds of a long window.

Each sample of a batch has its own window: a sample whose window has converged stops costing network
calls, and the others' windows slide on their own; the active (sample, step) rows of all samples go into
one network call per round. ``stats.rounds`` counts those calls (the batch's latency); ``stats.extra``
holds each sample's own rounds (``sample_rounds``) and the rows evaluated (``network_rows``).
"""

from __future__ import annotations

import math
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

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

if TYPE_CHECKING:
    from policy_accel.data.normalizer import Normalizer

INITIAL_GUESSES = ("extrapolate", "repeat", "student")
ITERATIONS = ("semilinear", "picard")

# The one source of the Picard options' defaults: PicardSampler's signature uses them, and
# configs/sampler/{paraddpm,picard,paraddim,paradpmsolver}.yaml must repeat exactly these values
# (tests/samplers/test_picard_config.py checks), since hydra shows and composes the YAML files.
DEFAULT_WINDOW: int | str = "auto"
DEFAULT_TOLERANCE = 0.1
DEFAULT_MAX_ITERATIONS: int | None = None
DEFAULT_INITIAL_GUESS = "extrapolate"
DEFAULT_DEADLINE_S: float | None = None
DEFAULT_ITERATION = "semilinear"
PICARD_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "window": DEFAULT_WINDOW,
        "tolerance": DEFAULT_TOLERANCE,
        "max_iterations": DEFAULT_MAX_ITERATIONS,
        "initial_guess": DEFAULT_INITIAL_GUESS,
        "deadline_s": DEFAULT_DEADLINE_S,
        "iteration": DEFAULT_ITERATION,
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
        iteration: str = DEFAULT_ITERATION,
        guess_sampler: Sampler | None = None,
    ) -> None:
        _check_options(window, tolerance, max_iterations)
        if initial_guess not in INITIAL_GUESSES:
            raise ValueError(f"initial_guess must be one of {INITIAL_GUESSES}, got {initial_guess!r}")
        if iteration not in ITERATIONS:
            raise ValueError(f"iteration must be one of {ITERATIONS}, got {iteration!r}")
        if initial_guess == "student" and guess_sampler is None:
            raise ValueError(
                "initial_guess='student' needs guess_checkpoint (a distilled student .safetensors of the same "
                "teacher); none was given and none is shipped beside this policy's checkpoint"
            )
        if guess_sampler is not None and initial_guess != "student":
            raise ValueError(f"a guess student is only used with initial_guess='student', not {initial_guess!r}")
        self.initial_guess = initial_guess
        self.iteration = iteration
        self.guess_sampler = guess_sampler  # initial_guess="student": its clean chunk starts the trajectory
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

    # ------------------------------------------------------ the guess student
    def to(self, device: torch.device | str) -> PicardSampler:
        """Move the guess student's network (if any) beside the denoiser."""
        if self.guess_sampler is not None:
            self.guess_sampler.to(device)
        return self

    def compile(self, mode: str | None) -> PicardSampler:
        """Compile the guess student's network (if any) with the policy's compile mode."""
        if self.guess_sampler is not None:
            self.guess_sampler.compile(mode)
        return self

    def check_compatible(
        self, obs_dim: int, n_obs_steps: int, horizon: int, action_dim: int, normalizer: Normalizer
    ) -> None:
        """A guess student must fit the policy (shapes and normaliser) like a student sampler."""
        if self.guess_sampler is not None:
            self.guess_sampler.check_compatible(obs_dim, n_obs_steps, horizon, action_dim, normalizer)

    def _guess_x0(
        self, cond: torch.Tensor, shape: tuple[int, int, int], noise: torch.Tensor, constraint: InpaintConstraint | None
    ) -> torch.Tensor | None:
        """The student's clean chunk from this solve's own x_T (a deterministic student uses only x_T)."""
        if self.guess_sampler is None:
            return None
        rows = self.guess_sampler.initial_noise(shape, None, device=noise.device, dtype=noise.dtype).shape[0]
        student_noise = torch.cat([noise[:1], noise.new_zeros((rows - 1, *shape))])
        out = self.guess_sampler.sample(None, cond, shape, noise=student_noise, constraint=constraint)  # type: ignore[arg-type]
        return out.sample

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
            "iteration": self.iteration,
            "guess": getattr(self.guess_sampler, "source", None) or getattr(self.guess_sampler, "name", None),
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
        guess_x0 = self._guess_x0(cond, shape, noise, constraint) if init_trajectory is None else None
        return self._solve(
            denoiser, cond, shape, noise, init_trajectory, min(window, n), deadline_s, constraint, guess_x0
        )

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
        guess_x0: torch.Tensor | None = None,
    ) -> SampleOutput:
        start_time = time.perf_counter()
        solver, n = self.solver, self.solver.num_steps
        batch, device = shape[0], noise.device
        max_rounds = min(self.max_iterations or n, n)
        tol2 = self.tolerance**2
        dim = shape[1] * shape[2]

        trajectory = torch.empty((n + 1, *shape), dtype=noise.dtype, device=device)
        trajectory[0] = noise[0]
        step_noise = (solver.noise_std.to(noise)[:, None, None, None] * noise[1:]) if solver.stochastic else None
        extrapolate = self.initial_guess != "repeat"
        fill_ahead = init_trajectory is None  # a caller's guess is kept as given
        # the latest clean-chunk estimate of each sample: the centre of the normalised actions (0) or the student's
        last_x0 = torch.zeros_like(noise[0]) if guess_x0 is None else guess_x0.to(noise)
        if init_trajectory is not None:
            trajectory[1:] = init_trajectory[1:]
        elif extrapolate:
            trajectory[1:] = solver.extrapolate(noise[0], 0, n, last_x0, step_noise)
        else:
            trajectory[1:] = noise[0]
        point_abar = solver.point_abar
        held = None  # every point's held prefix (constant: the committed actions noised to the point's level)
        if constraint is not None and constraint.hard > 0:
            held = constraint.hold_points(torch.zeros((n + 1, *shape), dtype=noise.dtype, device=device), point_abar)
            trajectory[:, :, : constraint.hard] = held[:, :, : constraint.hard]
        x0_buffer = torch.zeros((n, *shape), dtype=noise.dtype, device=device) if solver.uses_prev_x0 else None
        inv_scale = (self._inv_scale / dim).to(noise)
        timesteps = solver.tables(device)[0]
        # The part of each step kept exact inside a round: semilinear re-solves x_{i+1} = g_i x_i + c_i along
        # the window (c_i: the network's part, from the last round's inputs); Picard takes g_i = 1 (a cumsum).
        gain = solver.fixed_x0_tables(device)[0].to(noise) if self.iteration == "semilinear" else None
        offsets = torch.arange(window, device=device)

        begins = [0] * batch  # each sample's window slides on its own
        sample_rounds = [0] * batch
        sample_error = [0.0] * batch
        ends = [0] * batch
        rounds, rows_total, hit_deadline = 0, 0, False
        while rounds < max_rounds:
            active = [b for b in range(batch) if begins[b] < n]
            if not active:
                break
            lengths = [min(begins[b] + window, n) - begins[b] for b in active]
            longest = max(lengths)
            act = torch.tensor(active, device=device)
            begin_t = torch.tensor([begins[b] for b in active], device=device)
            length_t = torch.tensor(lengths, device=device)
            steps = begin_t[None, :] + offsets[:longest, None]  # (longest, A): the step of each window slot
            valid = offsets[:longest, None] < length_t[None, :]
            steps = steps.clamp(max=n - 1)
            slot_j, slot_a = valid.nonzero(as_tuple=True)  # step-major: all samples' first slots, then the next...
            row_step, row_sample = steps[slot_j, slot_a], act[slot_a]
            flat = trajectory[row_step, row_sample]
            eps = denoiser(flat, timesteps[row_step], cond[row_sample])
            x0 = solver.predict_x0(eps, row_step, flat)
            if constraint is not None:
                x0 = _rows_of(constraint, row_sample).guide(x0)
            x0_prev = None
            if x0_buffer is not None:
                x0_buffer[row_step, row_sample] = x0
                prev = x0_buffer[(row_step - 1).clamp(min=0), row_sample]
                x0_prev = torch.where((row_step > 0)[:, None, None], prev, torch.zeros_like(prev))
            mean = solver.combine(x0, eps, row_step, flat, x0_prev)
            # c_i = step_i(x_i) - g_i x_i (+ noise): x_{i+1} = g_i x_i + c_i holds exactly at the fixed point
            lagged = mean - flat if gain is None else mean - gain[row_step][:, None, None] * flat
            if step_noise is not None:
                lagged = lagged + step_noise[row_step, row_sample]
            increments = flat.new_zeros((longest, len(active), *shape[1:]))
            increments[slot_j, slot_a] = lagged
            start_points = trajectory[begin_t, act]
            if gain is None:
                updated = start_points + increments.cumsum(0)
            else:
                window_gain = gain[steps]
                slot_gain = torch.where(valid, window_gain, torch.ones_like(window_gain))[:, :, None, None]
                points, x = [], start_points
                for j in range(longest):
                    x = slot_gain[j] * x + increments[j]
                    points.append(x)
                updated = torch.stack(points)
            if held is not None:  # only the prefix moves with the hold, which no other position reads
                updated[:, :, : constraint.hard] = held[steps + 1, act[None, :], : constraint.hard]
            previous = trajectory[steps + 1, act[None, :]]
            error = (updated - previous).square().sum(dim=(-1, -2)) * inv_scale[steps]
            error = torch.where(valid, error, torch.zeros_like(error))
            rows = len(row_step)
            trajectory[row_step + 1, row_sample] = updated[slot_j, slot_a]
            # each sample's newest clean-chunk estimate: its window's last row (rows are slot-major, see above)
            row_of_slot = torch.empty((longest, len(active)), dtype=torch.long, device=device)
            row_of_slot[slot_j, slot_a] = torch.arange(rows, device=device)
            last_x0[act] = x0[row_of_slot[length_t - 1, torch.arange(len(active), device=device)]]
            rounds, rows_total = rounds + 1, rows_total + rows

            # One device-to-host transfer per round: where each sample slides, whether all is finite, the error kept.
            bad = ~(error <= tol2) & valid  # NaN counts as bad
            first_bad_t = torch.where(bad.any(0), bad.int().argmax(0), length_t)
            kept = torch.where(offsets[:longest, None] < first_bad_t[None, :], error, torch.zeros_like(error))
            summary = torch.cat(
                [first_bad_t.to(error.dtype), kept.amax(0), torch.isfinite(error).all().to(error.dtype)[None]]
            ).tolist()
            if not summary[-1]:
                raise NonFiniteSampleError(
                    f"sampler {self.name}: the network returned NaN/inf at denoising steps "
                    f"{min(begins[b] for b in active)}..{max(begins[b] for b in active) + longest - 1} "
                    "(is the observation far outside the range the policy was trained on?)"
                )
            first_bads = [int(v) for v in summary[: len(active)]]
            kept_max = summary[len(active) : 2 * len(active)]
            refill_ends, refill_new_ends, refill_samples = [], [], []
            for a, b in enumerate(active):
                first_bad, length = first_bads[a], lengths[a]
                end = begins[b] + length
                ends[b] = end
                sample_rounds[b] += 1
                sample_error[b] = kept_max[a] ** 0.5 if first_bad else 0.0
                begins[b] += min(first_bad + 1, length)
                new_end = min(begins[b] + window, n)
                if fill_ahead and new_end > end:  # points entering the window were never evaluated
                    refill_ends.append(end)
                    refill_new_ends.append(new_end)
                    refill_samples.append(b)
            if refill_samples:
                hard = 0 if constraint is None else constraint.hard
                self._refill(trajectory, refill_ends, refill_new_ends, refill_samples, last_x0, step_noise, held, hard)
            if deadline_s is not None and time.perf_counter() - start_time > deadline_s:
                hit_deadline = any(b < n for b in begins)
                break

        converged = all(b >= n for b in begins)
        sample = trajectory[n].clone()
        # a sample stopped early before its window reached the last step: the network's clean-chunk guess
        early = [b for b in range(batch) if begins[b] < n and ends[b] < n]
        if early:
            sample[early] = last_x0[early]
        if constraint is not None:  # the committed prefix, exactly (a converged solve has it already)
            sample = constraint.hold(sample, 1.0)
        check_finite_sample(sample, self.name)
        stats = SampleStats(
            nfe=math.ceil(rows_total / batch),
            rounds=rounds,
            final_error=max(sample_error),
            converged=converged,
            hit_deadline=hit_deadline,
            extra={
                "window": window,
                "tolerance": self.tolerance,
                "steps": n,
                "iteration": self.iteration,
                "initial_guess": self.initial_guess,
                "network_rows": rows_total,
                "sample_rounds": sample_rounds,
                "sample_rounds_mean": sum(sample_rounds) / batch,
                "guess_nfe": 0 if guess_x0 is None else getattr(self.guess_sampler, "num_steps", 1),
            },
        )
        return SampleOutput(sample=sample, stats=stats, trajectory=trajectory)

    def _refill(
        self,
        trajectory: torch.Tensor,
        ends: list[int],
        new_ends: list[int],
        samples: list[int],
        last_x0: torch.Tensor,
        step_noise: torch.Tensor | None,
        held: torch.Tensor | None,
        hard: int,
    ) -> None:
        """Guess the points entering each sample's window, ``ends[i] + 1 ... new_ends[i]`` of sample
        ``samples[i]``: follow the latest clean-chunk estimate with the pre-drawn noise (extrapolate, student),
        or repeat the window's last point (ParaDiGMS). No network call."""
        device = trajectory.device
        index = torch.tensor(samples, device=device)
        start = torch.tensor(ends, device=device)
        count = max(e - s for s, e in zip(ends, new_ends))
        if self.initial_guess == "repeat":
            guesses = trajectory[start, index][None].expand(count, -1, -1, -1)
        else:
            guesses = self.solver.extrapolate_rows(trajectory[start, index], start, count, last_x0[index], step_noise)
        point = start[None, :] + torch.arange(1, count + 1, device=device)[:, None]  # (count, S)
        j, k = (point <= torch.tensor(new_ends, device=device)[None, :]).nonzero(as_tuple=True)
        values = guesses[j, k]
        if held is not None:
            values[:, :hard] = held[point[j, k], index[k], :hard]
        trajectory[point[j, k], index[k]] = values


def _rows_of(constraint: InpaintConstraint, samples: torch.Tensor) -> InpaintConstraint:
    """The constraint of each row's own sample (rows of many samples and steps in one network call)."""
    return InpaintConstraint(
        constraint.target[samples], constraint.hard, constraint.weights, constraint.noise[samples], constraint.guidance
    )
