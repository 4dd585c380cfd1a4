"""Save a policy to the project's safetensors file; load one from any registered checkpoint format.

Loading is one path for every format (:mod:`policy_accel.formats`): the registry reads the file into a
config, normaliser, weights and native sampler; here the :class:`DiffusionPolicy` is built, its weights
loaded checked, and its sampler set once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from policy_accel.formats import LoadedCheckpoint, read_checkpoint
from policy_accel.formats.project import FORMAT, write_project_checkpoint
from policy_accel.model.checkpoint_io import CheckpointError, load_state_checked
from policy_accel.policy.diffusion_policy import DiffusionPolicy

__all__ = ["CheckpointError", "FORMAT", "build_policy", "load_policy", "save_policy", "shipped_guess_student"]


def save_policy(policy: DiffusionPolicy, path: str | Path, extra_metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``policy``'s weights, normaliser and config to ``path`` (.safetensors)."""
    return write_project_checkpoint(policy.state_dict(), policy.config, path, extra_metadata)


def shipped_guess_student(path: str | Path | None) -> str | None:
    """The 1-step student shipped beside a teacher checkpoint (``X_teacher.safetensors`` ->
    ``X_student_1step.safetensors`` in the same folder), or ``None``: what a Picard sampler with
    ``initial_guess: student`` and no ``guess_checkpoint`` loads."""
    if path is None:
        return None
    path = Path(path)
    if not path.name.endswith("_teacher.safetensors"):
        return None
    student = path.with_name(path.name[: -len("_teacher.safetensors")] + "_student_1step.safetensors")
    return str(student) if student.is_file() else None


def build_policy(loaded: LoadedCheckpoint, sampler: Any = None, path: str | Path | None = None) -> DiffusionPolicy:
    """The eval-mode :class:`DiffusionPolicy` of a read checkpoint, with ``sampler`` (``None``: its native one).
    The sampler is set after the weights load: a distilled student checks the policy's normaliser. ``path``
    (the checkpoint's file) lets ``initial_guess: student`` default to the student shipped beside it."""
    try:
        policy = DiffusionPolicy(loaded.config, normalizer=loaded.normalizer)
    except (ValueError, NotImplementedError) as exc:
        if loaded.config_source is None:
            raise
        raise loaded.error_type(f"{loaded.config_source}: {exc}") from exc
    if loaded.check_policy is not None:
        loaded.check_policy(policy)
    load_state_checked(policy, loaded.state_dict, loaded.source)
    policy.default_guess_checkpoint = shipped_guess_student(path)
    try:
        policy.set_sampler(loaded.native_sampler if sampler is None else sampler)
    except (TypeError, ValueError) as exc:
        if loaded.sampler_source is None:
            raise
        raise ValueError(f"sampler {sampler!r} for {loaded.sampler_source}: {exc}") from exc
    return policy.eval()


def load_policy(path: str | Path, sampler: Any = None) -> DiffusionPolicy:
    """Rebuild a :class:`DiffusionPolicy` from a checkpoint of any registered format, detected from the path:
    the project's safetensors (:func:`save_policy`), a Diffusion Policy workspace ``.ckpt`` or a LeRobot
    ``pretrained_model/`` folder. ``sampler=None`` runs the checkpoint's own inference (DP's scheduler and step
    count, LeRobot's ``noise_scheduler_type`` and ``num_inference_steps``, DDPM for the project's files)."""
    return build_policy(read_checkpoint(path), sampler, path=path)
