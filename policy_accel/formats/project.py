"""The project's own checkpoint: one safetensors file per policy, its config in the metadata.

safetensors cannot run code on load and keeps the file a plain, inspectable state dict; the
``format`` tag and the resolved config (:mod:`policy_accel.model.checkpoint_io`) let it rebuild alone.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Mapping

import torch

from policy_accel.formats.base import CheckpointFormat, LoadedCheckpoint, file_head
from policy_accel.model.checkpoint_io import CheckpointError, read_checkpoint, write_checkpoint
from policy_accel.model.config import DiffusionPolicyConfig

FORMAT = "policy_accel.diffusion_policy/1"
SUFFIX = ".safetensors"


def looks_like_safetensors(path: Path) -> bool:
    """A safetensors header: a little-endian u64 length that fits the file, then a JSON object."""
    head = file_head(path, 9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    try:
        return 8 + length <= path.stat().st_size
    except OSError:
        return False


def write_project_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    config: DiffusionPolicyConfig,
    path: str | Path,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a policy's weights + normaliser (``state_dict``) and ``config`` to ``path`` (.safetensors)."""
    return write_checkpoint(state_dict, path, FORMAT, config.to_dict(), extra=dict(extra) if extra else None)


class ProjectFormat(CheckpointFormat):
    """``save_policy``'s files: any ``.safetensors`` path, or a file with a safetensors header."""

    name = "policy-accel safetensors"

    def recognises(self, path: Path) -> bool:
        # the suffix alone claims a corrupt .safetensors file, so its error says what is wrong with it
        return path.is_file() and (path.suffix == SUFFIX or looks_like_safetensors(path))

    def read(self, path: Path) -> LoadedCheckpoint:
        tensors, config_dict, metadata = read_checkpoint(path, FORMAT)
        try:
            config = DiffusionPolicyConfig.from_dict(config_dict)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"'{path}' has an invalid config: {exc}") from exc
        return LoadedCheckpoint(
            config=config,
            state_dict=tensors,
            native_sampler="ddpm",  # what the project's teachers are trained and evaluated with
            source=f"checkpoint '{path}'",
            format=self.name,
            metadata=metadata,
        )
