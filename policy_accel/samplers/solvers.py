"""Single solver steps (DDPM, DDIM) taken from diffusers' schedulers, vectorised over steps.

Sequential and Picard samplers share these steps: a step maps ``(x_i, eps(x_i, t_i))``
to the mean of ``x_{i+1}``; stochastic solvers add ``noise_std[i] * z_i`` with ``z_i``
drawn up front. Taking the update from diffusers' ``*ParallelScheduler.batch_step_no_noise``
(the same step diffusers' own ParaDiGMS pipeline uses) means each row of a batch may
sit at a different timestep, which is what a Picard window needs.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from diffusers import DDIMParallelScheduler, DDPMParallelScheduler

# Diffusion Policy's PushT noise schedule (DDPMScheduler config).
DEFAULT_NOISE_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 100,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}

_SHARED_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample",
                "prediction_type")


def shared_schedule(noise_scheduler: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of a training noise-scheduler config that every solver must share."""
    unknown = set(noise_scheduler) - set(DEFAULT_NOISE_SCHEDULER) - {"clip_sample_range"}
    if unknown:
        raise ValueError(f"unknown noise scheduler keys {sorted(unknown)}; known: {sorted(DEFAULT_NOISE_SCHEDULER)}")
    merged = {**DEFAULT_NOISE_SCHEDULER, **noise_scheduler}
    return {k: merged[k] for k in _SHARED_KEYS}


class StepSolver:
    """Base: ``timesteps`` (N,), ``noise_std`` (N,), and ``mean_next`` for rows at any steps."""

    name = "solver"
    stochastic = False

    def __init__(self, num_steps: int) -> None:
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.num_steps = num_steps
        self.timesteps: torch.Tensor
        self.noise_std: torch.Tensor

    def mean_next(self, eps: torch.Tensor, step_index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean of ``x_{i+1}`` for rows ``x`` (M, T, D) at step indices ``step_index`` (M,)."""
        raise NotImplementedError


class DDPMSolver(StepSolver):
    """Ancestral DDPM (Ho et al.), ``fixed_small`` posterior variance."""

    name = "ddpm"
    stochastic = True

    def __init__(self, noise_scheduler: Mapping[str, Any], num_steps: int | None = None) -> None:
        schedule = shared_schedule(noise_scheduler)
        super().__init__(num_steps or schedule["num_train_timesteps"])
        self.scheduler = DDPMParallelScheduler(**schedule, variance_type="fixed_small")
        self.scheduler.set_timesteps(self.num_steps)
        self.timesteps = self.scheduler.timesteps.clone().long()
        self.noise_std = torch.stack([self.scheduler._get_variance(int(t)) ** 0.5 if int(t) > 0
                                      else torch.tensor(0.0) for t in self.timesteps]).float()

    def mean_next(self, eps: torch.Tensor, step_index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scheduler.batch_step_no_noise(eps, self.timesteps[step_index], x)


class DDIMSolver(StepSolver):
    """Deterministic DDIM (eta = 0), final step to alpha = 1 as Diffusion Policy configures it."""

    name = "ddim"

    def __init__(self, noise_scheduler: Mapping[str, Any], num_steps: int = 10,
                 timestep_spacing: str = "trailing") -> None:
        super().__init__(num_steps)
        self.scheduler = DDIMParallelScheduler(**shared_schedule(noise_scheduler), set_alpha_to_one=True,
                                               steps_offset=0, timestep_spacing=timestep_spacing)
        self.scheduler.set_timesteps(num_steps)
        self.timesteps = self.scheduler.timesteps.clone().long()
        self.noise_std = torch.zeros(num_steps)

    def mean_next(self, eps: torch.Tensor, step_index: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.scheduler.batch_step_no_noise(eps, self.timesteps[step_index], x)
