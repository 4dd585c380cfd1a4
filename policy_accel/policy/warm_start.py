"""Warm starts across control steps: reuse the last chunk's noise and solution, shifted in time.

Consecutive chunks overlap: after executing ``shift`` actions, position ``i`` of the new
chunk is position ``i + shift`` of the old one. Shifting the old chunk's pre-drawn noise
the same way (fresh noise for the new tail) keeps every chunk's noise exactly standard
normal, while making consecutive solves nearly the same fixed-point problem, so the old
Picard trajectory, shifted, is a good initial guess for the new one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def shift_horizon(tensor: torch.Tensor, shift: int, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Drop the first ``shift`` positions of the horizon axis (-2) and append ``fill`` (or
    repeat the last position) at the end."""
    if shift <= 0:
        return tensor.clone()
    kept = tensor[..., shift:, :]
    tail = fill if fill is not None else kept[..., -1:, :].expand(*kept.shape[:-2], shift, kept.shape[-1])
    return torch.cat([kept, tail], dim=-2)


@dataclass
class WarmStartState:
    """What the last solve left behind: its noise (N+1, B, T, D) and trajectory (or None)."""

    noise: torch.Tensor
    trajectory: torch.Tensor | None

    def next_inputs(self, shift: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Noise and initial guess for the next chunk, ``shift`` executed actions later."""
        source = generator.device if generator is not None else self.noise.device
        fresh = torch.randn(
            (*self.noise.shape[:-2], shift, self.noise.shape[-1]),
            generator=generator,
            dtype=self.noise.dtype,
            device=source,
        ).to(self.noise.device)
        noise = shift_horizon(self.noise, shift, fresh)
        guess = shift_horizon(self.trajectory, shift) if self.trajectory is not None else None
        return noise, guess
