"""The registry of env families: which family an env config, a result or a policy belongs to.

Adding a family: a simulator folder in ``envs/`` (registering its gymnasium ids) and one
:class:`~policy_accel.eval.families.base.EnvFamily` module here, listed in :data:`FAMILIES`.
"""

from __future__ import annotations

from typing import Any

from policy_accel.eval.families.base import EnvFamily, Episode, ObsAdapter, RolloutSetup, StepScore, cfg_value
from policy_accel.eval.families.metaworld import MetaWorldFamily
from policy_accel.eval.families.pusht import PushTFamily

PUSHT = PushTFamily()
METAWORLD = MetaWorldFamily()
FAMILIES: dict[str, EnvFamily] = {family.name: family for family in (PUSHT, METAWORLD)}
DEFAULT = PUSHT  # an env config naming no known obs type or id (a test's own PushT variant id)


def family_named(name: str) -> EnvFamily:
    """The family registered as ``name`` (``pusht``, ``metaworld``)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown env family '{name}'; known: {sorted(FAMILIES)}") from None


def family_for(env_cfg: Any) -> EnvFamily:
    """The family of a hydra ``env`` config, a plain mapping, or a result dict (``obs_type``, ``env_id``/``id``)."""
    for family in FAMILIES.values():
        if family.owns_env(env_cfg):
            return family
    env_id = cfg_value(env_cfg, "id", cfg_value(env_cfg, "env_id"))
    for family in FAMILIES.values():
        if env_id == family.env_id:
            return family
    return DEFAULT


def family_of_policy(policy_config: Any) -> EnvFamily:
    """The family whose observations a policy reads (PushT for anything no family claims, as trained on it)."""
    for family in FAMILIES.values():
        if family is not DEFAULT and family.owns_policy(policy_config):
            return family
    return DEFAULT


def check_policy(
    policy_config: Any, env_cfg: Any, checkpoint: Any = "the checkpoint", observations: bool = True
) -> str | None:
    """Why a checkpoint cannot run on an env config (an unknown task, another family's policy, other
    observations), else None. ``observations=False`` skips the detailed observation check of families that
    only need it for rollouts."""
    family = family_for(env_cfg)
    if (problem := family.check_env(env_cfg)) is not None:
        return f"env: {problem}"
    policy_family = family_of_policy(policy_config)
    if policy_family is not family:
        return (
            f"'{checkpoint}' is {policy_family.describe_policy(policy_config)} but the env is {family.title}; "
            f"pass {family.checkpoint_advice()}{policy_family.env_hint(policy_config)}"
        )
    return family.check_policy(policy_config, env_cfg, checkpoint, observations)


__all__ = [
    "DEFAULT",
    "FAMILIES",
    "METAWORLD",
    "PUSHT",
    "EnvFamily",
    "Episode",
    "ObsAdapter",
    "RolloutSetup",
    "StepScore",
    "check_policy",
    "family_for",
    "family_named",
    "family_of_policy",
]
