"""One safetensors file per model: weights + normaliser stats, config in the metadata.

safetensors cannot execute code on load (unlike pickled ``.pt``) and keeps the file a
plain, inspectable state_dict. Loading checks the config, every key and every shape,
and names whatever does not match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from policy_accel.policy.config import DiffusionPolicyConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy

FORMAT = "policy_accel.diffusion_policy/1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def save_policy(policy: DiffusionPolicy, path: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy``'s weights, normaliser and config to ``path`` (.safetensors)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(policy.config.to_dict())}
    if extra_metadata:
        metadata["extra"] = json.dumps(dict(extra_metadata))
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(tensors, config_dict, extra)`` of a checkpoint, with clear errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}'")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors checkpoint: {exc}") from exc
    if metadata.get("format") != FORMAT or "config" not in metadata:
        raise CheckpointError(f"'{path}' is not a policy_accel checkpoint (metadata format "
                              f"{metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        config = json.loads(metadata["config"])
        extra = json.loads(metadata.get("extra", "{}"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' has corrupt config metadata: {exc}") from exc
    return tensors, config, extra


def load_state_checked(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that lists missing, unexpected and mis-shaped keys in one error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    mismatched = [f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in tensors and tensors[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if mismatched:
            parts.append(f"shape mismatches {mismatched[:8]}{' ...' if len(mismatched) > 8 else ''}")
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(parts))
    nonfinite = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{source} has NaN/inf in {nonfinite[:8]}")
    module.load_state_dict(tensors)


def load_policy(path: str | Path, sampler: Any = "ddpm") -> DiffusionPolicy:
    """Rebuild a :class:`DiffusionPolicy` from a checkpoint written by :func:`save_policy`."""
    tensors, config_dict, _ = read_checkpoint(path)
    try:
        config = DiffusionPolicyConfig.from_dict(config_dict)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"'{path}' has an invalid config: {exc}") from exc
    policy = DiffusionPolicy(config, sampler=sampler)
    load_state_checked(policy, tensors, f"checkpoint '{path}'")
    return policy.eval()
