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


def load(
    path: str | Path,
    sampler: Any = None,
    warm_start: bool = False,
    threads: int | None = None,
    device: str = "auto",
    compile: bool | str = False,
    **sampler_options: Any,
) -> DiffusionPolicy:
    """Load a checkpoint (the project's safetensors, a Diffusion Policy ``.ckpt``, a LeRobot
    ``pretrained_model/`` folder, or any format in :data:`policy_accel.formats.FORMATS`; the format is
    detected) with a sampler chosen by name (``"ddpm"``,
    ``"ddim-10"``, ``"picard"``, ``"paraddim-16"``, ``"student"``...) and its options
    (``window``, ``tolerance``, ``num_steps``, ``deadline_s``, ``checkpoint``...). ``sampler=None``
    runs the checkpoint's own inference (what Diffusion Policy or LeRobot would run).

    ``warm_start`` reuses each chunk's noise and Picard solution for the next one.
    ``threads`` is torch's intra-op thread count while the policy plans (``None``: torch's
    default). In a control loop sharing the CPU with other processes, ``threads=1`` keeps
    latency steady (see docs/benchmarks.md, *Latency under load*).
    ``device``: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``; a
    device that is not there is an error. ``compile``: True compiles the denoiser with the device's
    best backend (CPU: TorchScript freeze; CUDA: torch.compile with CUDA graphs), or name one
    (``"freeze"``, ``"inductor"``, ``"reduce-overhead"``); it compiles now and says how long it took.
    Call ``policy.warmup()`` before the loop's first tick."""
    from policy_accel.device import resolve_device
    from policy_accel.paths import shipped_or_given
    from policy_accel.policy.loading import load_policy
    from policy_accel.policy.warmup import check_threads
    from policy_accel.samplers import parse_sampler_spec

    if not isinstance(warm_start, bool):
        raise TypeError(f"warm_start must be True or False, got {warm_start!r}")
    check_threads(threads)
    target = resolve_device(device)
    if sampler_options:
        if not isinstance(sampler, (str, dict)):
            raise ValueError("sampler options need a sampler given by name or mapping")
        sampler = {**parse_sampler_spec(sampler), **sampler_options}
    policy = load_policy(shipped_or_given(path), sampler=sampler)
    policy.warm_start = warm_start
    policy.threads = threads
    policy.to(target)
    if compile:
        policy.compile(compile)
    return policy


def __getattr__(name: str) -> Any:
    """``policy_accel.RealTimePolicy``: the real-time runtime, imported on first use (it pulls in torch)."""
    if name == "RealTimePolicy":
        from policy_accel.policy.realtime import RealTimePolicy

        return RealTimePolicy
    raise AttributeError(f"module 'policy_accel' has no attribute '{name}'")


__all__ = ["load", "RealTimePolicy", "__version__"]
