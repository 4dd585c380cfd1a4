"""What every checkpoint format gives the policy layer, so that one loader builds policies from any of them.

A format only reads: it recognises its files and turns one into a :class:`LoadedCheckpoint` (config,
normaliser, weights under the project's key names, the sampler its own inference runs). Building the
:class:`~policy_accel.policy.diffusion_policy.DiffusionPolicy` and setting its sampler happen once, in
:func:`policy_accel.policy.loading.load_policy`, which keeps formats below the policy layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from policy_accel.data.normalizer import Normalizer
from policy_accel.model.checkpoint_io import CheckpointError
from policy_accel.model.config import DiffusionPolicyConfig

SamplerSpec = str | Mapping[str, Any]


class UnrecognisedCheckpointError(CheckpointError):
    """A path exists but no registered format recognises it."""


class PolicyLike(Protocol):
    """What writers need of a policy (its config, network and weights), without importing the policy layer."""

    config: DiffusionPolicyConfig
    model: nn.Module

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...


@dataclass
class LoadedCheckpoint:
    """A checkpoint read into what :func:`~policy_accel.policy.loading.load_policy` builds a policy from."""

    config: DiffusionPolicyConfig
    state_dict: dict[str, torch.Tensor]  # the policy's weights and buffers under its own key names, checked on load
    native_sampler: SamplerSpec  # what the checkpoint's own inference runs (``sampler=None``)
    source: str  # how errors about the weights name them, e.g. "checkpoint 'p.safetensors'"
    format: str = ""  # the reading format's name
    normalizer: Normalizer | None = None  # None: the policy builds an empty one from ``config.normalizer``
    check_policy: Callable[[nn.Module], None] | None = None  # extra check of the built policy before its weights load
    error_type: type[CheckpointError] = CheckpointError  # the format's error, for problems found while building
    config_source: str | None = None  # set: a config the policy cannot be built from is an ``error_type`` naming it
    sampler_source: str | None = None  # set: a sampler the policy refuses is a ValueError naming this checkpoint
    metadata: dict[str, Any] = field(default_factory=dict)  # anything else the file carries (e.g. converted_from)


class CheckpointFormat(ABC):
    """One checkpoint format: registered in :data:`policy_accel.formats.FORMATS`."""

    name: str = ""  # short, for error messages ("LeRobot folder")

    @abstractmethod
    def recognises(self, path: Path) -> bool:
        """Whether ``path`` (which exists) is this format's; cheap (a suffix, a few header bytes)."""

    @abstractmethod
    def read(self, path: Path) -> LoadedCheckpoint:
        """Read ``path``; a file that is corrupt or of an option this project cannot run raises a
        :class:`CheckpointError` naming the path and the problem."""


def file_head(path: Path, size: int = 16) -> bytes:
    """The first ``size`` bytes of a file (b"" for a folder or an unreadable file): format sniffing."""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""
