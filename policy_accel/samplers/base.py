"""The one interface every way of turning noise into an action chunk implements.

A sampler gets a *denoiser* (the policy's noise-prediction network with the
observation conditioning bound), the chunk shape and a torch generator, and
returns the chunk in normalised action units with statistics. Samplers know
nothing about observations, normalisation or queues; the policy knows nothing
about solver steps. That split is what lets DDPM, DDIM, DPM-Solver, Picard and a
distilled student be swapped by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Denoiser(Protocol):
    """``eps = denoiser(x, t, cond)``: x (N, T, D), t (N,) long, cond (N, C) -> (N, T, D).

    N may be larger than the observation batch: Picard samplers stack many timesteps
    of the same observation into one call, repeating ``cond`` to match.
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SampleStats:
    """What a sampler spent. ``rounds`` are sequential network calls (latency on a wide
    accelerator); ``nfe`` counts network evaluations per observation (compute)."""

    nfe: int
    rounds: int
    final_error: float = 0.0
    converged: bool = True
    hit_deadline: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SampleOutput:
    sample: torch.Tensor  # (B, T, D), normalised action units
    stats: SampleStats
    trajectory: torch.Tensor | None = None  # (steps + 1, B, T, D) when the sampler keeps it (Picard)


@runtime_checkable
class Sampler(Protocol):
    """Noise -> action chunk. Implementations are cheap, stateless between calls, and
    take their schedule from the policy's training noise scheduler config."""

    name: str

    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> SampleOutput: ...


class NonFiniteSampleError(FloatingPointError):
    """The network produced NaN/inf: the chunk is unusable and must not be executed.

    Usually an observation far outside the training range (normalised values of 1e20
    overflow the network's float32 activations)."""


def check_finite_sample(sample: torch.Tensor, sampler_name: str) -> None:
    """Raise :class:`NonFiniteSampleError` unless every value of ``sample`` is finite (one sync)."""
    if not bool(torch.isfinite(sample).all()):
        raise NonFiniteSampleError(
            f"sampler {sampler_name}: the denoised action chunk contains NaN/inf (the network output is not "
            "finite; is the observation far outside the range the policy was trained on?)"
        )


def check_cond(cond: torch.Tensor, shape: tuple[int, int, int]) -> None:
    """Reject conditioning that does not match the requested batch, or is not finite."""
    if len(shape) != 3:
        raise ValueError(f"chunk shape must be (batch, horizon, action_dim), got {tuple(shape)}")
    if cond.ndim != 2 or cond.shape[0] != shape[0]:
        raise ValueError(f"cond must be (batch={shape[0]}, C), got {tuple(cond.shape)}")
    if not torch.isfinite(cond).all():
        raise ValueError("conditioning contains NaN or inf")
    if not bool((cond.abs() < 1e15).all()):  # finite but overflows the network's float32 activations
        raise ValueError(
            f"conditioning is out of range (max |value| {float(cond.abs().max()):.3g} after "
            "normalisation): the observation is far outside what the policy was trained on"
        )
