"""Does a loaded policy fit the environment a command will roll it out in? Asked before any rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def check_policy_fits_env(policy: Any, cfg: DictConfig, checkpoint: Path, command: str) -> None:
    """``SystemExit`` naming the mismatch: another env family (PushT vs Meta-World), an unknown task, LeRobot
    features no env view provides, or another observation type (with the ``env=`` that fits)."""
    from policy_accel.eval.families import check_policy

    if (problem := check_policy(policy.config, cfg.env, checkpoint)) is not None:
        raise SystemExit(f"policy-accel {command}: {problem}")
