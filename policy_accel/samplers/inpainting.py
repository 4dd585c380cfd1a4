"""Inpainting constraints for real-time chunking (RTC, Black et al. 2025, arXiv 2506.07339).

When a chunk is planned while the previous one executes, its first actions are already decided: the robot
executes them from the previous chunk while the network runs. RTC treats the new chunk as an inpainting
problem. Here a :class:`InpaintConstraint` holds, in normalised action units at the new chunk's positions:

* a *hard prefix* ``[0, hard)``: the committed actions. At every trajectory point x_k the prefix is replaced
  by the committed actions noised to that point's level, ``sqrt(abar_k) y + sqrt(1 - abar_k) z`` with one
  ``z`` drawn per chunk (so a sequential and a Picard solve see the same constraint and share a fixed
  point); the returned chunk's prefix is exactly ``y``;
* *soft guidance* on the rest of the overlap: each step's clean-chunk estimate is pulled toward ``y`` with
  RTC's exponentially decaying weights, ``x0 <- x0 + g * w_i * (y_i - x0_i)``, before the solver's update.

Why this guidance and not RTC's: RTC's guidance is pseudo-inverse (PiGDM) guidance, a vector-Jacobian product
through the network at every step, which needs gradients (two to three times a step's cost on a CPU, so a
longer delay, the very thing being fought) and does not fit a Picard window's one batched call under
``inference_mode``. Taking the denoiser's Jacobian as the identity leaves the correction ``w * (y - x0)`` in
clean-chunk space: no extra network call, the same affine step form for DDPM, DDIM, DPM-Solver++, the
students and Picard rounds, and each step is still a deterministic function of x_k, so Picard's fixed point
is the sequential constrained solve. The weights are RTC's ``exp`` schedule (its paper's eq. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MAX_GUIDANCE = 10.0  # the strength scales the decaying weights; each pull is clipped at 1 (the target itself)


def rtc_weights(hard: int, end: int, horizon: int, span: int | None = None) -> torch.Tensor:
    """RTC's guidance weights over a chunk of ``horizon`` positions: 1 on the committed prefix ``[0, hard)``,
    decaying exponentially over ``[hard, end)`` (the rest of the overlap with the previous chunk), 0 from
    ``end`` on (positions the previous chunk never planned). With c_i = (end - i) / (end - hard + 1), the
    weight is c_i (e^c_i - 1) / (e - 1). ``span`` ends the decay ``span`` positions after the prefix
    (``end = min(end, hard + span)``; ``None``: the whole overlap, RTC's own schedule)."""
    if not 0 <= hard <= horizon or not 0 <= end <= horizon:
        raise ValueError(f"need 0 <= hard ({hard}), end ({end}) <= horizon ({horizon})")
    if span is not None and (isinstance(span, bool) or not isinstance(span, int) or span < 0):
        raise ValueError(f"guidance span must be an integer >= 0 or None, got {span!r}")
    hard = min(hard, end)
    if span is not None:
        end = min(end, hard + span)
    i = torch.arange(horizon, dtype=torch.float64)
    linear = ((end - i) / (end - hard + 1)).clamp(0.0, 1.0)
    weights = linear * torch.expm1(linear) / (math.e - 1.0)
    weights[:hard] = 1.0
    weights[end:] = 0.0
    return weights.float()


@dataclass
class InpaintConstraint:
    """What a chunk planned during execution must respect, in normalised action units (see the module).

    ``target`` (B, T, D): the previous plan at the new chunk's positions (anything where ``weights`` is 0);
    ``hard``: the length of the committed prefix; ``weights`` (T,): guidance weights (1 on the prefix);
    ``noise`` (B, T, D): the standard normal draw that noises the prefix; ``guidance``: the strength g in
    [0, 1] of the soft pull (0: prefix replacement alone)."""

    target: torch.Tensor
    hard: int
    weights: torch.Tensor
    noise: torch.Tensor
    guidance: float = 1.0

    def check(self, shape: tuple[int, int, int]) -> None:
        """Refuse a constraint that does not fit the chunk shape (before any network call)."""
        if tuple(self.target.shape) != tuple(shape) or tuple(self.noise.shape) != tuple(shape):
            raise ValueError(
                f"constraint target/noise must have the chunk shape {tuple(shape)}, "
                f"got {tuple(self.target.shape)} and {tuple(self.noise.shape)}"
            )
        if tuple(self.weights.shape) != (shape[1],):
            raise ValueError(f"constraint weights must have shape ({shape[1]},), got {tuple(self.weights.shape)}")
        if not 0 <= self.hard <= shape[1]:
            raise ValueError(f"constraint prefix length {self.hard} must lie in [0, horizon {shape[1]}]")
        if not 0.0 <= float(self.guidance) <= MAX_GUIDANCE:
            raise ValueError(f"guidance strength must lie in [0, {MAX_GUIDANCE}], got {self.guidance}")
        if not bool(torch.isfinite(self.target).all()):
            raise ValueError("constraint target contains NaN or inf")

    def to(self, like: torch.Tensor) -> InpaintConstraint:
        """The constraint on ``like``'s device and dtype."""
        return InpaintConstraint(
            self.target.to(like), self.hard, self.weights.to(like), self.noise.to(like), float(self.guidance)
        )

    def hold(self, x: torch.Tensor, abar: float | torch.Tensor) -> torch.Tensor:
        """``x`` (B, T, D) at noise level ``abar`` with its prefix replaced by the noised committed actions."""
        if self.hard == 0:
            return x
        abar = torch.as_tensor(abar, dtype=torch.float64)
        a, s = float(abar.sqrt()), float((1.0 - abar).clamp_min(0.0).sqrt())
        x = x.clone()
        x[:, : self.hard] = a * self.target[:, : self.hard] + s * self.noise[:, : self.hard]
        return x

    def hold_points(self, points: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """Trajectory points (K, B, T, D) at levels ``abar`` (K,) with their prefixes replaced (in place)."""
        if self.hard == 0 or len(points) == 0:
            return points
        a = abar.sqrt().to(points)[:, None, None, None]
        s = (1.0 - abar).clamp_min(0.0).sqrt().to(points)[:, None, None, None]
        points[:, :, : self.hard] = a * self.target[None, :, : self.hard] + s * self.noise[None, :, : self.hard]
        return points

    def guide(self, x0: torch.Tensor) -> torch.Tensor:
        """Pull clean-chunk estimates (M, T, D), M a multiple of the batch (Picard stacks steps batch-major
        within each step), toward the target with the guidance weights."""
        if self.guidance == 0.0:
            return x0
        repeats = x0.shape[0] // self.target.shape[0]
        target = self.target.repeat(repeats, 1, 1) if repeats > 1 else self.target
        pull = (self.guidance * self.weights).clamp(max=1.0)  # never past the target
        return x0 + pull[None, :, None] * (target - x0)


def check_constraint(constraint: object, shape: tuple[int, int, int], like: torch.Tensor) -> InpaintConstraint:
    """The constraint checked against ``shape`` and moved beside ``like`` (a TypeError for anything else)."""
    if not isinstance(constraint, InpaintConstraint):
        raise TypeError(f"constraint must be an InpaintConstraint, got {type(constraint).__name__}")
    constraint.check(shape)
    return constraint.to(like)
