"""LeRobot's feature normalisation, formula for formula (``NormalizerProcessorStep`` / ``UnnormalizerProcessorStep``).

LeRobot picks a mode per feature *type* (``norm_map``: VISUAL, STATE, ENV, ACTION -> MEAN_STD, MIN_MAX,
QUANTILES, QUANTILE10 or IDENTITY). A type missing from the map, or a feature without stats, is passed
through unchanged: under LeRobot's default map ``observation.environment_state`` (type ENV) reaches the
network in raw units although its stats are saved. The quirks are kept so a loaded policy sees exactly
what it saw in LeRobot:

- MEAN_STD: ``(x - mean) / (std + eps)``, inverse ``y * std + mean`` (no eps).
- MIN_MAX / QUANTILES / QUANTILE10: ``2 (x - lo) / (hi - lo) - 1`` with a zero range replaced by eps
  (lo, hi = min/max, q01/q99, q10/q90); inverse ``(y + 1) / 2 (hi - lo) + lo``.
- Visual stats stored flat ``(C,)`` are broadcast per channel ``(C, 1, 1)``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

#: mode -> the two stats it reads (centre/low, scale/high)
MODE_STATS: dict[str, tuple[str, str]] = {
    "MEAN_STD": ("mean", "std"),
    "MIN_MAX": ("min", "max"),
    "QUANTILES": ("q01", "q99"),
    "QUANTILE10": ("q10", "q90"),
}
NORM_MODES = (*MODE_STATS, "IDENTITY")
DEFAULT_EPS = 1e-8


def stats_shape(feature_type: str, feature_shape: Sequence[int], stat_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape a stat is applied with: LeRobot reshapes flat visual stats ``(C,)`` to ``(C, 1, 1)``."""
    shape = tuple(int(d) for d in stat_shape)
    if feature_type == "VISUAL" and len(shape) == 1:
        return (shape[0], 1, 1)
    return shape


class LeRobotFeatureNormalizer(nn.Module):
    """One feature's LeRobot (un)normalisation; buffers are named after the stats (``min``/``max``, ...)."""

    def __init__(
        self, mode: str, shape: Sequence[int], eps: float = DEFAULT_EPS, stats: Mapping[str, torch.Tensor] | None = None
    ) -> None:
        super().__init__()
        if mode not in MODE_STATS:
            raise ValueError(f"normalisation mode {mode!r} is not one of {list(MODE_STATS)} (IDENTITY needs no module)")
        self.mode, self.eps = mode, float(eps)
        self.low_name, self.high_name = MODE_STATS[mode]
        shape = tuple(int(d) for d in shape)
        for name in (self.low_name, self.high_name):
            value = torch.zeros(shape) if stats is None else torch.as_tensor(stats[name], dtype=torch.float32)
            self.register_buffer(name, value.reshape(shape).clone().float())

    def _low_high(self) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, self.low_name), getattr(self, self.high_name)

    def _range(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self._low_high()
        span = (high - low).to(x)
        return torch.where(span == 0, torch.full_like(span, self.eps), span)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self._low_high()
        if self.mode == "MEAN_STD":
            return (x - low.to(x)) / (high.to(x) + self.eps)
        return 2 * (x - low.to(x)) / self._range(x) - 1

    def unnormalize(self, y: torch.Tensor) -> torch.Tensor:
        low, high = self._low_high()
        if self.mode == "MEAN_STD":
            return y * high.to(y) + low.to(y)
        return (y + 1) / 2 * self._range(y) + low.to(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scale, offset)`` whose ``(y - offset) / scale`` is :meth:`unnormalize` (to float rounding):
        how the action's inverse travels in the project's own :class:`AffineFieldNormalizer`."""
        low, high = (t.double() for t in self._low_high())
        if self.mode == "MEAN_STD":
            std = torch.where(high == 0, torch.full_like(high, self.eps), high)
            return (1.0 / std).float(), (-low / std).float()
        span = high - low
        span = torch.where(span == 0, torch.full_like(span, self.eps), span)
        return (2.0 / span).float(), (-1.0 - 2.0 * low / span).float()
