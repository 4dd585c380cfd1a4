"""One safetensors file per policy: weights + normaliser stats, its config in the metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from policy_accel.model.checkpoint_io import CheckpointError, load_state_checked, read_checkpoint, write_checkpoint
from policy_accel.model.config import DiffusionPolicyConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy

FORMAT = "policy_accel.diffusion_policy/1"

__all__ = ["CheckpointError", "FORMAT", "load_policy", "read_checkpoint", "save_policy"]


def save_policy(policy: DiffusionPolicy, path: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy``'s weights, normaliser and config to ``path`` (.safetensors)."""
    return write_checkpoint(
        policy.state_dict(),
        path,
        FORMAT,
        policy.config.to_dict(),
        extra=dict(extra_metadata) if extra_metadata else None,
    )


def load_policy(path: str | Path, sampler: Any = None) -> DiffusionPolicy:
    """Rebuild a :class:`DiffusionPolicy` from a checkpoint; the format is detected from the file:
    the project's safetensors (:func:`save_policy`), a Diffusion Policy workspace ``.ckpt``
    (:mod:`policy_accel.formats.diffusion_policy.checkpoint`), or a LeRobot ``pretrained_model/`` directory.
    ``sampler=None`` runs the checkpoint's own inference (DP's scheduler and step count, LeRobot's
    ``noise_scheduler_type`` and ``num_inference_steps``, DDPM for the project's files)."""
    path = Path(path)
    if path.is_dir():
        from policy_accel.formats.lerobot.checkpoint import load_lerobot_policy  # lazy: optional format

        return load_lerobot_policy(path, sampler=sampler)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}'")
    from policy_accel.formats.diffusion_policy.checkpoint import is_pickle_checkpoint, load_dp_checkpoint

    if is_pickle_checkpoint(path):
        return load_dp_checkpoint(path, sampler=sampler)
    return _load_safetensors(path, sampler)


def _load_safetensors(path: Path, sampler: Any) -> DiffusionPolicy:
    tensors, config_dict, _ = read_checkpoint(path, FORMAT)
    try:
        config = DiffusionPolicyConfig.from_dict(config_dict)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"'{path}' has an invalid config: {exc}") from exc
    policy = DiffusionPolicy(config)
    load_state_checked(policy, tensors, f"checkpoint '{path}'")
    policy.set_sampler("ddpm" if sampler is None else sampler)  # after the weights: students check the normaliser
    return policy.eval()
