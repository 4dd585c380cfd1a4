"""One safetensors file per policy: weights + normaliser stats, its config in the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from policy_accel.model.checkpoint_io import CheckpointError, load_state_checked, read_checkpoint, write_checkpoint
from policy_accel.policy.config import DiffusionPolicyConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy

FORMAT = "policy_accel.diffusion_policy/1"

__all__ = ["CheckpointError", "FORMAT", "load_policy", "read_checkpoint", "save_policy"]


def save_policy(policy: DiffusionPolicy, path: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy``'s weights, normaliser and config to ``path`` (.safetensors)."""
    return write_checkpoint(policy.state_dict(), path, FORMAT, policy.config.to_dict(),
                            extra=dict(extra_metadata) if extra_metadata else None)


def load_policy(path: str | Path, sampler: Any = "ddpm") -> DiffusionPolicy:
    """Rebuild a :class:`DiffusionPolicy` from a checkpoint written by :func:`save_policy`."""
    tensors, config_dict, _ = read_checkpoint(path, FORMAT)
    try:
        config = DiffusionPolicyConfig.from_dict(config_dict)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"'{path}' has an invalid config: {exc}") from exc
    policy = DiffusionPolicy(config)
    load_state_checked(policy, tensors, f"checkpoint '{path}'")
    policy.set_sampler(sampler)  # after the weights: a student sampler checks the loaded normaliser
    return policy.eval()
