"""Checkpoint formats and their registry: each format recognises its paths and reads them into a
:class:`LoadedCheckpoint`; :func:`policy_accel.policy.loading.load_policy` builds the policy from it.

A new format is one module (a :class:`CheckpointFormat` subclass) and one line in :data:`FORMATS`.
Importing this package imports every format, which also registers the encoders they define (LeRobot's)
with :mod:`policy_accel.model.builders`.
"""

from __future__ import annotations

from pathlib import Path

from policy_accel.formats.base import CheckpointFormat, LoadedCheckpoint, UnrecognisedCheckpointError
from policy_accel.formats.diffusion_policy.checkpoint import DiffusionPolicyFormat
from policy_accel.formats.lerobot.checkpoint import LeRobotFormat
from policy_accel.formats.project import ProjectFormat

# tried in order; the first that recognises a path reads it
FORMATS: list[CheckpointFormat] = [
    ProjectFormat(),
    DiffusionPolicyFormat(),
    LeRobotFormat(),
]


def register_format(checkpoint_format: CheckpointFormat) -> None:
    """Add a format (from outside this package) after the built-in ones; one of the same name is replaced."""
    FORMATS[:] = [f for f in FORMATS if f.name != checkpoint_format.name] + [checkpoint_format]


def _tried() -> str:
    return ", ".join(f.name for f in FORMATS)


def detect_format(path: str | Path) -> CheckpointFormat:
    """The registered format that recognises ``path``. A missing path is a :class:`FileNotFoundError`, one no
    format recognises an :class:`UnrecognisedCheckpointError`; both name the path and the formats tried."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: '{path}' (readable formats: {_tried()})")
    for checkpoint_format in FORMATS:
        if checkpoint_format.recognises(path):
            return checkpoint_format
    raise UnrecognisedCheckpointError(f"'{path}' is not a checkpoint of a known format (tried: {_tried()})")


def read_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Read ``path`` with the format that recognises it (:func:`detect_format`)."""
    path = Path(path)
    checkpoint_format = detect_format(path)
    loaded = checkpoint_format.read(path)
    loaded.format = loaded.format or checkpoint_format.name
    return loaded


__all__ = [
    "FORMATS",
    "CheckpointFormat",
    "LoadedCheckpoint",
    "UnrecognisedCheckpointError",
    "detect_format",
    "read_checkpoint",
    "register_format",
]
