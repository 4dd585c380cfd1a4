"""Solver steps (DDPM, DDIM, DPM-Solver++) as per-step coefficients, vectorised over steps.

Every solver here updates a sample in the same affine form::

    x0   = clip(P[i] * x + Q[i] * eps)                        predicted clean chunk
    mean = A[i] * x0 + B[i] * x + C[i] * eps + E[i] * x0_prev  mean of the next sample
    next = mean + noise_std[i] * z_i                           z_i drawn up front

``x0_prev`` is the previous step's ``x0`` (DPM-Solver++'s second-order multistep term).
The coefficients are read off the diffusers scheduler of each solver (its
``alphas_cumprod``, timesteps and sigmas), and the tests check each step against that
scheduler's own ``step``. One affine form serves the sequential samplers and the Picard
sampler alike: a Picard window evaluates rows at many different steps in one batch,
which is just a gather of these coefficient vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from policy_accel.model.config import DEFAULT_NOISE_SCHEDULER

# Diffusion Policy's PushT noise schedule (DDPMScheduler config).

# what the noise-prediction network outputs: the noise (Diffusion Policy) or the clean chunk (LeRobot's "sample")
PREDICTION_TYPES = ("epsilon", "sample")
_SHARED_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
# DDIM inference settings a checkpoint may carry (Diffusion Policy's DDIM workspaces); only DDIMSolver reads them
DDIM_KEYS = ("set_alpha_to_one", "steps_offset", "timestep_spacing")


def ddpm_scheduler_config(noise_scheduler: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a noise-scheduler config that diffusers' ``DDPMScheduler`` takes."""
    return {k: v for k, v in noise_scheduler.items() if k not in DDIM_KEYS}


def shared_schedule(noise_scheduler: Mapping[str, Any]) -> dict[str, Any]:
    """Validated training noise-scheduler config, merged over the defaults."""
    unknown = set(noise_scheduler) - set(DEFAULT_NOISE_SCHEDULER) - {"clip_sample_range", *DDIM_KEYS}
    if unknown:
        raise ValueError(f"unknown noise scheduler keys {sorted(unknown)}; known: {sorted(DEFAULT_NOISE_SCHEDULER)}")
    merged = {**DEFAULT_NOISE_SCHEDULER, **noise_scheduler}
    if merged["prediction_type"] not in PREDICTION_TYPES:
        raise ValueError(
            f"samplers take a network predicting one of {list(PREDICTION_TYPES)}, "
            f"got prediction_type '{merged['prediction_type']}'"
        )
    return merged


def _as_prediction_type(coef: StepCoefficients, abar_t: torch.Tensor, prediction_type: str) -> StepCoefficients:
    """Rewrite epsilon-form coefficients for a network that predicts ``prediction_type``.

    A "sample" network outputs the clean chunk m itself: x0 = clip(m), and the epsilon the
    schedulers derive from it, (x - sqrt(abar) m) / sqrt(1 - abar), is computed from the
    *unclipped* m (as diffusers' DDIM does). Both are affine in (x, m), so every solver keeps the
    one affine form: P = 0, Q = 1, and the eps term folds into B and C."""
    if prediction_type == "epsilon":
        return coef
    root_a, root_s = abar_t.sqrt(), (1.0 - abar_t).sqrt()
    one, zero = torch.ones_like(coef.P), torch.zeros_like(coef.P)
    return StepCoefficients(
        P=zero,
        Q=one,
        A=coef.A,
        B=coef.B + coef.C / root_s,
        C=-coef.C * root_a / root_s,
        E=coef.E,
        noise_std=coef.noise_std,
        noise_var=coef.noise_var,
    )


@dataclass
class StepCoefficients:
    """Per-step vectors (length N) of the affine update in the module docstring."""

    P: torch.Tensor
    Q: torch.Tensor
    A: torch.Tensor
    B: torch.Tensor
    C: torch.Tensor
    E: torch.Tensor
    noise_std: torch.Tensor
    noise_var: torch.Tensor  # DDPM posterior variance of each step: the Picard tolerance scale


def _ddpm_posterior_var(abar_t: torch.Tensor, abar_prev: torch.Tensor) -> torch.Tensor:
    beta = 1.0 - abar_t / abar_prev
    return ((1.0 - abar_prev) / (1.0 - abar_t) * beta).clamp_min(1e-20)


class StepSolver:
    """Timesteps + coefficients of one solver; ``mean_next`` applies any steps to any rows."""

    name = "solver"
    stochastic = False
    uses_prev_x0 = False

    def __init__(
        self,
        timesteps: torch.Tensor,
        coefficients: StepCoefficients,
        clip_range: float | None,
        point_abar: torch.Tensor | None = None,
    ) -> None:
        self.timesteps = timesteps.long()
        self.num_steps = len(timesteps)
        # alpha_bar of trajectory point k = 0..N (the noise level of the sampler's x_k; point N is the clean
        # chunk, 1.0): inpainting noises a known prefix to exactly this level at every point
        self.point_abar = (
            point_abar.double() if point_abar is not None else torch.ones(self.num_steps + 1, dtype=torch.float64)
        )
        self.coef = coefficients
        self.clip_range = clip_range
        self.noise_std = coefficients.noise_std
        self._packed = torch.stack(
            [coefficients.P, coefficients.Q, coefficients.A, coefficients.B, coefficients.C, coefficients.E], dim=1
        ).float()  # (N, 6)
        # The step with eps implied by a fixed clean-chunk guess x0: eps = (x0 - P x) / Q turns the
        # update into x_{i+1} = G[i] x_i + H[i] x0 (+ noise): what the solver would do if the
        # network kept predicting x0. Picard samplers use it to guess trajectory points.
        c = coefficients
        self._fixed_x0_gain = (c.B - c.C * c.P / c.Q).tolist()
        self._fixed_x0_weight = (c.A + c.C / c.Q + (c.E if self.uses_prev_x0 else 0.0)).tolist()

    def tables(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(timesteps, packed coefficients)`` on ``device``, copied there once and cached, so that
        a sampling loop on an accelerator never copies them from the host again."""
        key = str(torch.device(device))
        cache = self.__dict__.setdefault("_device_tables", {})
        if key not in cache:
            cache[key] = (self.timesteps.to(device), self._packed.to(device))
        return cache[key]

    def _gather(self, step_index: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        packed = self.tables(like.device)[1].to(like.dtype)
        coef = packed[step_index].reshape(-1, 6, *([1] * (like.ndim - 1)))
        return coef.unbind(1)

    def predict_x0(self, eps: torch.Tensor, step_index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The (clipped) clean-chunk prediction of rows ``x`` at ``step_index``."""
        p, q, *_ = self._gather(step_index, x)
        x0 = p * x + q * eps
        return x0.clamp(-self.clip_range, self.clip_range) if self.clip_range is not None else x0

    def combine(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        step_index: torch.Tensor,
        x: torch.Tensor,
        x0_prev: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean of ``x_{i+1}`` from this step's ``x0`` (and the previous step's, for multistep solvers)."""
        _, _, a, b, c, e = self._gather(step_index, x)
        mean = a * x0 + b * x + c * eps
        if self.uses_prev_x0 and x0_prev is not None:
            mean = mean + e * x0_prev
        return mean

    def mean_next(
        self, eps: torch.Tensor, step_index: torch.Tensor, x: torch.Tensor, x0_prev: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean of x_{i+1}, x0)`` for rows ``x`` (M, T, D) at step indices ``step_index`` (M,)."""
        x0 = self.predict_x0(eps, step_index, x)
        return self.combine(x0, eps, step_index, x, x0_prev), x0

    def extrapolate(
        self,
        x_start: torch.Tensor,
        start_index: int,
        count: int,
        x0: torch.Tensor,
        step_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Points ``start_index + 1 ... start_index + count`` reached from ``x_start`` if every
        step's network output implied the clean chunk ``x0``; ``step_noise[i]`` (already scaled)
        is added at step i. Costs no network call: a cheap guess of where the solve goes."""
        points, x = [], x_start
        for i in range(start_index, start_index + count):
            x = self._fixed_x0_gain[i] * x + self._fixed_x0_weight[i] * x0
            if step_noise is not None:
                x = x + step_noise[i]
            points.append(x)
        return torch.stack(points)

    def fixed_x0_tables(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gain, weight)`` vectors (N,) of the step with the clean chunk held fixed,
        ``x_{i+1} = gain[i] x_i + weight[i] x0`` (+ noise), on ``device`` (cached): the part of each step
        that is linear in ``x`` once the network's output is frozen (semilinear Picard, picard.py)."""
        key = str(torch.device(device))
        cache = self.__dict__.setdefault("_fixed_x0_tables", {})
        if key not in cache:
            cache[key] = (
                torch.tensor(self._fixed_x0_gain, dtype=torch.float32, device=device),
                torch.tensor(self._fixed_x0_weight, dtype=torch.float32, device=device),
            )
        return cache[key]

    def extrapolate_rows(
        self,
        x_start: torch.Tensor,
        start: torch.Tensor,
        count: int,
        x0: torch.Tensor,
        step_noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`extrapolate` for many samples at once, each from its own step: ``x_start`` (B, T, D) at
        step indices ``start`` (B,) long, the clean chunks ``x0`` (B, T, D), ``step_noise`` (N, B, T, D)
        (already scaled). Returns points ``start + 1 ... start + count`` as (count, B, T, D); rows past the
        last step repeat the clean end point (callers ignore them). No network call."""
        gain, weight = (t.to(x_start.dtype) for t in self.fixed_x0_tables(x_start.device))
        samples = torch.arange(x_start.shape[0], device=x_start.device)
        points, x = [], x_start
        for j in range(count):
            index = start + j
            inside = index < self.num_steps
            step = index.clamp(max=self.num_steps - 1)
            g, h = gain[step][:, None, None], weight[step][:, None, None]
            nxt = g * x + h * x0
            if step_noise is not None:
                nxt = nxt + step_noise[step, samples]
            x = torch.where(inside[:, None, None], nxt, x)
            points.append(x)
        return torch.stack(points) if points else x_start.new_empty((0, *x_start.shape))


def _eps_to_x0(abar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 1.0 / abar.sqrt(), -(1.0 - abar).sqrt() / abar.sqrt()


class DDPMSolver(StepSolver):
    """Ancestral DDPM (Ho et al.) as diffusers' ``DDPMScheduler`` with ``fixed_small`` variance."""

    name = "ddpm"
    stochastic = True

    def __init__(self, noise_scheduler: Mapping[str, Any], num_steps: int | None = None) -> None:
        cfg = shared_schedule(noise_scheduler)
        scheduler = DDPMScheduler(**ddpm_scheduler_config(cfg))
        scheduler.set_timesteps(num_steps or cfg["num_train_timesteps"])
        timesteps = scheduler.timesteps.long()
        abar = scheduler.alphas_cumprod.double()
        prev = [int(scheduler.previous_timestep(int(t))) for t in timesteps]
        abar_t = abar[timesteps]
        abar_prev = torch.stack([abar[p] if p >= 0 else torch.tensor(1.0, dtype=abar.dtype) for p in prev])
        alpha_t = abar_t / abar_prev
        P, Q = _eps_to_x0(abar_t)
        var = _ddpm_posterior_var(abar_t, abar_prev)
        coef = StepCoefficients(
            P=P,
            Q=Q,
            A=abar_prev.sqrt() * (1.0 - alpha_t) / (1.0 - abar_t),
            B=alpha_t.sqrt() * (1.0 - abar_prev) / (1.0 - abar_t),
            C=torch.zeros_like(P),
            E=torch.zeros_like(P),
            noise_std=torch.where(timesteps > 0, var.sqrt(), torch.zeros_like(var)).float(),
            noise_var=var.float(),
        )
        coef = _as_prediction_type(coef, abar_t, cfg["prediction_type"])
        super().__init__(
            timesteps,
            coef,
            cfg.get("clip_sample_range", 1.0) if cfg["clip_sample"] else None,
            point_abar=torch.cat([abar_t, torch.ones(1, dtype=torch.float64)]),
        )


class DDIMSolver(StepSolver):
    """Deterministic DDIM (eta = 0) as diffusers' ``DDIMScheduler``, last step to alpha = 1.

    Each step goes to the *next timestep in the list* (diffusers assumes uniform gaps,
    ``t - 1000 // N``; the two agree whenever N divides the train steps)."""

    name = "ddim"

    def __init__(
        self, noise_scheduler: Mapping[str, Any], num_steps: int = 10, timestep_spacing: str | None = None
    ) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        cfg = shared_schedule(noise_scheduler)
        # a checkpoint's own DDIM settings (Diffusion Policy: "leading" spacing) unless the caller names one
        spacing = timestep_spacing or cfg.get("timestep_spacing", "trailing")
        alpha_to_one = bool(cfg.get("set_alpha_to_one", True))
        scheduler = DDIMScheduler(
            **{
                k: cfg[k]
                for k in (
                    "num_train_timesteps",
                    "beta_start",
                    "beta_end",
                    "beta_schedule",
                    "clip_sample",
                    "prediction_type",
                )
            },
            set_alpha_to_one=alpha_to_one,
            steps_offset=int(cfg.get("steps_offset", 0)),
            timestep_spacing=spacing,
        )
        scheduler.set_timesteps(num_steps)
        timesteps = scheduler.timesteps.long()
        abar = scheduler.alphas_cumprod.double()
        abar_t = abar[timesteps]
        final = torch.ones(1, dtype=abar.dtype) if alpha_to_one else abar[:1]
        abar_prev = torch.cat([abar[timesteps[1:]], final])
        P, Q = _eps_to_x0(abar_t)
        zeros = torch.zeros_like(P)
        coef = StepCoefficients(
            P=P,
            Q=Q,
            A=abar_prev.sqrt(),
            B=zeros,
            C=(1.0 - abar_prev).sqrt(),
            E=zeros,
            noise_std=zeros.float(),
            noise_var=_ddpm_posterior_var(abar_t, abar_prev).float(),
        )
        coef = _as_prediction_type(coef, abar_t, cfg["prediction_type"])
        super().__init__(
            timesteps,
            coef,
            cfg.get("clip_sample_range", 1.0) if cfg["clip_sample"] else None,
            point_abar=torch.cat([abar_t, torch.ones(1, dtype=torch.float64)]),
        )


class DPMSolverPP(StepSolver):
    """DPM-Solver++(2M) (Lu et al. 2022) as diffusers' ``DPMSolverMultistepScheduler`` defaults:
    first-order first and last steps, second-order midpoint in between, final sigma 0.
    ``clip_sample`` (default: the training schedule's) clips x0 like DDPM/DDIM do; diffusers'
    DPM-Solver has no static clipping, so ``clip_sample=False`` reproduces it exactly. Clipping
    matters here: at t=99 of this schedule 1/sqrt(alpha_bar) is ~2000, so unclipped x0 amplifies
    any noise-prediction error, while the normalised actions are known to lie in [-1, 1]."""

    name = "dpmsolver"
    uses_prev_x0 = True

    def __init__(
        self, noise_scheduler: Mapping[str, Any], num_steps: int = 10, clip_sample: bool | None = None
    ) -> None:
        if num_steps < 2:
            raise ValueError(f"DPM-Solver++ needs num_steps >= 2, got {num_steps}")
        cfg = shared_schedule(noise_scheduler)
        scheduler = DPMSolverMultistepScheduler(
            **{
                k: cfg[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
            },
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            final_sigmas_type="zero",
        )
        scheduler.set_timesteps(num_steps)
        timesteps = scheduler.timesteps.long()
        sigmas = scheduler.sigmas.double()  # (N+1,), VE sigmas, last one 0
        alpha = 1.0 / (sigmas**2 + 1.0).sqrt()
        sigma = sigmas * alpha
        lam = torch.log(alpha) - torch.log(sigma)  # +inf at the final sigma 0
        n = len(timesteps)
        A, B, E = (torch.zeros(n, dtype=torch.float64) for _ in range(3))
        for i in range(n):
            h = lam[i + 1] - lam[i]
            decay = math.exp(-float(h)) if math.isfinite(float(h)) else 0.0
            B[i] = sigma[i + 1] / sigma[i]
            k = alpha[i + 1] * (1.0 - decay)
            second_order = 0 < i < n - 1
            if second_order:
                r0 = (lam[i] - lam[i - 1]) / h
                A[i], E[i] = k * (1.0 + 0.5 / r0), -k * 0.5 / r0
            else:
                A[i] = k
        abar_t = alpha[:-1] ** 2
        P, Q = _eps_to_x0(abar_t)
        abar_prev = alpha[1:] ** 2
        coef = StepCoefficients(
            P=P,
            Q=Q,
            A=A,
            B=B,
            C=torch.zeros(n, dtype=torch.float64),
            E=E,
            noise_std=torch.zeros(n),
            noise_var=_ddpm_posterior_var(abar_t, abar_prev).float(),
        )
        coef = _as_prediction_type(coef, abar_t, cfg["prediction_type"])
        clip = cfg["clip_sample"] if clip_sample is None else clip_sample
        super().__init__(
            timesteps,
            coef,
            clip_range=cfg.get("clip_sample_range", 1.0) if clip else None,
            point_abar=torch.cat([abar_t, torch.ones(1, dtype=torch.float64)]),
        )


SOLVERS: dict[str, type[StepSolver]] = {"ddpm": DDPMSolver, "ddim": DDIMSolver, "dpmsolver": DPMSolverPP}


def abar_at(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """alpha_bar at integer timesteps, with t = -1 meaning the clean end point (alpha_bar = 1)."""
    padded = torch.cat([alphas_cumprod.double(), torch.ones(1, dtype=torch.float64)])
    return padded[timesteps.long()]  # index -1 picks the appended 1.0


def trailing_grid(num_train_timesteps: int, num_steps: int) -> torch.Tensor:
    """``num_steps + 1`` integer timesteps from ``T-1`` down to -1 (clean), diffusers' "trailing"
    spacing. Grids of N and 2N steps nest (``grid(N) == grid(2N)[::2]``) whenever 2N divides
    evenly into the rounding, which holds for powers of two on a 100-step schedule."""
    points = (
        torch.round(
            torch.arange(num_steps + 1, dtype=torch.float64) * (-num_train_timesteps / num_steps) + num_train_timesteps
        )
        - 1
    )
    return points.long()


class VPredictionDDIMSolver(StepSolver):
    """Deterministic DDIM for a *v-prediction* network on an explicit timestep grid.

    The distilled students predict ``v = alpha * eps - sigma * x`` (Salimans & Ho), which stays
    well conditioned where alpha -> 0; ``x0 = alpha z - sigma v`` and the DDIM update
    ``z' = alpha' x0 + sigma' (z - alpha x0) / sigma`` reuse the clipped x0 in both terms."""

    name = "student"

    def __init__(
        self, noise_scheduler: Mapping[str, Any], grid: torch.Tensor | list[int], clip_sample: bool | None = None
    ) -> None:
        cfg = shared_schedule(noise_scheduler)
        grid = torch.as_tensor(grid).long()
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()) or int(grid[-1]) != -1:
            raise ValueError(f"grid must strictly decrease to -1 (clean), got {grid.tolist()}")
        abar = abar_at(DDPMScheduler(**ddpm_scheduler_config(cfg)).alphas_cumprod, grid)
        alpha, sigma = abar.sqrt(), (1.0 - abar).sqrt()
        a_t, s_t, a_n, s_n = alpha[:-1], sigma[:-1], alpha[1:], sigma[1:]
        zeros = torch.zeros_like(a_t)
        coef = StepCoefficients(
            P=a_t,
            Q=-s_t,
            A=a_n - s_n * a_t / s_t,
            B=s_n / s_t,
            C=zeros,
            E=zeros,
            noise_std=zeros.float(),
            noise_var=_ddpm_posterior_var(abar[:-1], abar[1:]).float(),
        )
        clip = cfg["clip_sample"] if clip_sample is None else clip_sample
        super().__init__(
            grid[:-1], coef, clip_range=cfg.get("clip_sample_range", 1.0) if clip else None, point_abar=abar
        )
        self.grid = grid
