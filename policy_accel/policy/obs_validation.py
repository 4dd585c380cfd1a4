"""Check observations before they reach the network: shapes, dtypes, NaN/inf, dict keys.

A robot loop feeds the policy whatever its drivers produce; a wrong shape or a NaN must be a
clear ``ValueError``/``TypeError`` naming the problem, not a garbage action chunk. The checks
depend only on the policy config (``obs_dim``, ``n_obs_steps``, ``obs_shapes``), so they live here,
apart from the policy's ``nn.Module``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from policy_accel.model.config import DiffusionPolicyConfig

Observation = torch.Tensor | dict[str, torch.Tensor]


def as_tensor(obs: Any, what: str) -> torch.Tensor:
    """A numeric array or tensor (any device) -> float32 tensor; non-numeric dtypes are a ``TypeError``."""
    array = obs if isinstance(obs, torch.Tensor) else np.asarray(obs)
    if isinstance(array, np.ndarray) and not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"{what} must be numeric, got dtype {array.dtype}")
    if isinstance(array, torch.Tensor) and not (
        array.dtype.is_floating_point or array.dtype in (torch.int32, torch.int64)
    ):
        raise TypeError(f"{what} must be numeric, got dtype {array.dtype}")
    return torch.as_tensor(array, dtype=torch.float32)


def check_obs(obs: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
    """``obs`` must be ``(batch, *expected)`` and finite."""
    if tuple(obs.shape[-len(expected) :]) != expected or obs.ndim != len(expected) + 1:
        raise ValueError(f"{what} must have shape (batch, {', '.join(map(str, expected))}), got {tuple(obs.shape)}")
    if not torch.isfinite(obs).all():
        raise ValueError(f"{what} contains NaN or inf")


def check_obs_dict(
    config: DiffusionPolicyConfig, obs: Any, leading: tuple[int, ...], what: str
) -> dict[str, torch.Tensor]:
    """Dict observation -> float tensors ``(B, *leading, *shape)`` per configured key (extra keys ignored)."""
    shapes = config.obs_shapes or {}
    if not isinstance(obs, Mapping):
        raise TypeError(f"{what} must be a dict with keys {list(shapes)}, got {type(obs).__name__}")
    missing = [k for k in shapes if k not in obs]
    if missing:
        raise ValueError(f"{what} is missing keys {missing} (policy observes {list(shapes)})")
    out: dict[str, torch.Tensor] = {}
    for key, entry in shapes.items():
        expected = (*leading, *(int(d) for d in entry["shape"]))
        raw = obs[key]
        if entry["type"] == "rgb" and getattr(raw, "dtype", None) in (np.uint8, torch.uint8):
            raise TypeError(
                f"{what}['{key}'] is uint8: images must be float in [0, 1], channels first "
                f"{tuple(entry['shape'])} (divide by 255 and move channels first)"
            )
        value = as_tensor(raw, f"{what}['{key}']")
        check_obs(value, expected, f"{what}['{key}']")
        out[key] = value
    batches = {k: v.shape[0] for k, v in out.items()}
    if len(set(batches.values())) > 1:
        raise ValueError(f"{what}: keys disagree on the batch size {batches}")
    return out


def checked_history(config: DiffusionPolicyConfig, obs_history: Any) -> Observation:
    """An observation history ``(B, n_obs_steps, obs_dim)`` (dict policies: ``{key: (B, n_obs_steps, *shape)}``),
    checked and as float32 tensors."""
    if config.dict_obs:
        return check_obs_dict(config, obs_history, (config.n_obs_steps,), "obs_history")
    obs = as_tensor(obs_history, "obs_history")
    check_obs(obs, (config.n_obs_steps, config.obs_dim), "obs_history")
    return obs


def checked_step(config: DiffusionPolicyConfig, obs: Any) -> tuple[Observation, bool]:
    """One step's observation -> (batched, checked copy; whether it came unbatched).

    Copies: robot loops often reuse one buffer per tick, and a queued view would be overwritten."""
    if config.dict_obs:
        shapes = config.obs_shapes or {}
        if not isinstance(obs, Mapping):
            raise TypeError(f"obs must be a dict with keys {list(shapes)}, got {type(obs).__name__}")
        first = next(iter(shapes))
        single = first in obs and np.ndim(obs[first]) == len(shapes[first]["shape"])
        step = {k: (v[None] if single else v) for k, v in obs.items() if k in shapes}
        return {k: v.clone() for k, v in check_obs_dict(config, {**obs, **step}, (), "obs").items()}, single
    tensor = as_tensor(obs, "obs").clone()
    single = tensor.ndim == 1
    batch = tensor[None] if single else tensor
    check_obs(batch, (config.obs_dim,), "obs")
    return batch, single
