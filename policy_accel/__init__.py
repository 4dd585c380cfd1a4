"""policy-accel: fast sampling for Diffusion Policy (Picard-parallel and distilled samplers).

Embedding in a control loop::

    import policy_accel
    policy = policy_accel.load("checkpoints/pusht_keypoints_teacher.safetensors",
                               sampler="picard", window="auto")
    policy.reset()
    action = policy.select_action(obs)   # obs: the env's observation, action: env units
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policy_accel.policy.diffusion_policy import DiffusionPolicy

__version__ = "0.1.0"

from policy_accel import envs as _envs  # noqa: E402,F401  (registers the gymnasium ids, e.g. policy_accel/PushT-v0)


def load(path: str | Path, sampler: Any = "ddpm", warm_start: bool = False, threads: int | None = None,
         **sampler_options: Any) -> "DiffusionPolicy":
    """Load a shipped or trained checkpoint with a sampler chosen by name (``"ddpm"``,
    ``"ddim-10"``, ``"picard"``, ``"paraddim-16"``, ``"student"``...) and its options
    (``window``, ``tolerance``, ``num_steps``, ``deadline_s``, ``checkpoint``...).

    ``warm_start`` reuses each chunk's noise and Picard solution for the next one.
    ``threads`` is torch's intra-op thread count while the policy plans (``None``: torch's
    default). In a control loop sharing the CPU with other processes, ``threads=1`` keeps
    latency steady (see docs/benchmarks.md, *Latency under load*).
    Call ``policy.warmup()`` before the loop's first tick."""
    from policy_accel.paths import shipped_or_given
    from policy_accel.policy.checkpoint import load_policy
    from policy_accel.policy.warmup import check_threads
    from policy_accel.samplers import parse_sampler_spec

    if not isinstance(warm_start, bool):
        raise TypeError(f"warm_start must be True or False, got {warm_start!r}")
    check_threads(threads)
    if sampler_options:
        if not isinstance(sampler, (str, dict)):
            raise ValueError("sampler options need a sampler given by name or mapping")
        sampler = {**parse_sampler_spec(sampler), **sampler_options}
    policy = load_policy(shipped_or_given(path), sampler=sampler)
    policy.warm_start = warm_start
    policy.threads = threads
    return policy


__all__ = ["load", "__version__"]
