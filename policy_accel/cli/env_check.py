"""Does a loaded policy fit the environment a command will roll it out in? Asked before any rollout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def check_policy_fits_env(policy: Any, cfg: DictConfig, checkpoint: Path, command: str) -> None:
    """``SystemExit`` naming the mismatch: another env family (PushT vs Meta-World), LeRobot features no
    env view provides, or another PushT observation type (with the ``env=`` that fits)."""
    from policy_accel.eval.metaworld_rollout import family_mismatch
    from policy_accel.eval.obs_adapter import env_hint
    from policy_accel.eval.obs_mapping import env_plan, uses_feature_names

    if (problem := family_mismatch(policy.config, cfg.env, checkpoint)) is not None:
        raise SystemExit(f"policy-accel {command}: {problem}")
    if uses_feature_names(policy.config):  # a LeRobot folder: the rollout picks the PushT view its features need
        try:
            env_plan(policy.config, cfg.env)
        except ValueError as exc:
            raise SystemExit(f"policy-accel {command}: '{checkpoint}': {exc}") from None
    elif policy.config.obs_type != cfg.env.obs_type:
        raise SystemExit(
            f"policy-accel {command}: '{checkpoint}' was trained on obs_type "
            f"'{policy.config.obs_type}' but env gives '{cfg.env.obs_type}'; "
            f"pass {env_hint(policy.config)}"
        )
