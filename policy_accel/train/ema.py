"""Diffusion Policy's EMA of the weights, on top of ``torch.optim.swa_utils.AveragedModel``.

The decay warms up as ``1 - (1 + step) ** -power`` (capped at ``max_decay``), so the
average tracks the fast-moving early weights and smooths the late ones; evaluation
and shipped checkpoints use the averaged weights.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


def warmup_ema_avg_fn(
    power: float = 0.75, max_decay: float = 0.9999
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        decay = min(max_decay, max(0.0, 1.0 - (1.0 + float(num_averaged)) ** -power))
        return averaged + (current - averaged) * (1.0 - decay)

    return average


def make_ema(model: nn.Module, power: float = 0.75, max_decay: float = 0.9999) -> AveragedModel:
    """An averaged copy of ``model``; call ``ema.update_parameters(model)`` after each step."""
    return AveragedModel(model, avg_fn=warmup_ema_avg_fn(power, max_decay), use_buffers=True)
