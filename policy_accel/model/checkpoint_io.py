"""Safetensors checkpoint files: tensors + JSON metadata, with errors that name the problem.

safetensors cannot execute code on load (unlike pickled ``.pt``) and keeps a file a
plain, inspectable state_dict. Every policy_accel model file carries a ``format``
tag and its resolved ``config`` in the metadata; loading checks the tag, every key,
every shape and that no weight is NaN/inf.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def write_checkpoint(
    tensors: Mapping[str, torch.Tensor], path: str | Path, file_format: str, config: Mapping[str, Any], **metadata: Any
) -> Path:
    """Atomically write ``tensors`` with ``format``, ``config`` and extra JSON metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": file_format, "config": json.dumps(dict(config))}
    meta.update({key: json.dumps(value) for key, value in metadata.items() if value is not None})
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)  # a crash never leaves a half-written checkpoint
    return path


def read_checkpoint(
    path: str | Path, file_format: str | tuple[str, ...]
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(tensors, config, other_metadata)`` of a checkpoint of one of the given formats."""
    path = Path(path)
    formats = (file_format,) if isinstance(file_format, str) else tuple(file_format)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: '{path}'")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"'{path}' is not a readable safetensors checkpoint: {exc}") from exc
    if metadata.get("format") not in formats or "config" not in metadata:
        raise CheckpointError(
            f"'{path}' is not a {' or '.join(formats)} checkpoint (its metadata format is {metadata.get('format')!r})"
        )
    try:
        decoded = {key: json.loads(value) for key, value in metadata.items() if key != "format"}
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' has corrupt metadata: {exc}") from exc
    config = decoded.pop("config")
    decoded["format"] = metadata["format"]
    return tensors, config, decoded


def load_state_checked(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that lists missing, unexpected and mis-shaped keys in one error."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    mismatched = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in tensors and tensors[k].shape != own[k].shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            problems.append(f"{label} {items[:8]}{' ...' if len(items) > 8 else ''}")
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))
    nonfinite = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{source} has NaN/inf in {nonfinite[:8]}")
    module.load_state_dict(tensors)
