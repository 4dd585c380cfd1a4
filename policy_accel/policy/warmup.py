"""Get a policy ready before a control loop's first tick: calibrate (or reuse) the Picard window, warm the kernels.

Without this, the first ``select_action`` of a ``window="auto"`` policy stalls for the whole
calibration (seconds to minutes on a CPU) inside the loop. ``policy.warmup()`` does that work
up front, says how long it took, and caches the window per machine, model, device, thread count
and chunk shape (:mod:`policy_accel.policy.calibration_cache`), so the next start is quick.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Any, Iterator

import torch

from policy_accel.policy.calibration_cache import calibration_key, load_calibration, store_calibration

if TYPE_CHECKING:
    from policy_accel.policy.diffusion_policy import DiffusionPolicy


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` intra-op threads (``None``: leave torch's setting), then restore.

    torch's thread count is process-wide; the policy holds its lock while inside, so two
    policies of one process never interleave their settings."""
    if threads is None or threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def check_threads(threads: Any) -> int | None:
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1 (or None for torch's default), got {threads!r}")
    return threads


def calibrate_with_cache(
    policy: DiffusionPolicy,
    cond: torch.Tensor,
    shape: tuple[int, int, int],
    use_cache: bool = True,
    announce: bool = True,
) -> dict[str, Any]:
    """Resolve the calibration of the policy's sampler (a ``window="auto"`` Picard sampler: its window) from
    the cache, else by measuring (:meth:`Sampler.calibrate`)."""
    sampler = policy.sampler
    settings = {**sampler.calibration_settings(), "compile": policy.compile_mode}  # compiled rounds cost less
    key = calibration_key(policy.model_fingerprint, cond.device, torch.get_num_threads(), settings, shape)
    cached = load_calibration(key) if use_cache else None
    if cached is not None:
        sampler.calibration = {**cached, "from_cache": True}
        return sampler.calibration
    if announce:
        print(
            f"policy-accel: calibrating the Picard window of {sampler.name} on this machine "
            f"({torch.get_num_threads()} threads, batch {shape[0]}); call policy.warmup() before a control loop "
            "to do this outside it",
            file=sys.stderr,
            flush=True,
        )
    calibration = sampler.calibrate(policy.denoise, cond, shape)
    if use_cache:
        store_calibration(key, calibration)
    sampler.calibration = {**calibration, "from_cache": False}
    return sampler.calibration


def warmup_policy(
    policy: DiffusionPolicy, batch_size: int = 1, use_cache: bool = True, verbose: bool = True
) -> dict[str, Any]:
    """Calibrate or reuse the window, then plan one chunk so that kernels and allocators are warm."""
    start = time.perf_counter()
    cond = policy.neutral_cond(batch_size)
    shape = (batch_size, policy.config.horizon, policy.config.action_dim)
    info: dict[str, Any] = {"sampler": policy.sampler.name, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        if policy.sampler.needs_calibration:
            calibration = calibrate_with_cache(policy, cond, shape, use_cache=use_cache, announce=False)
            info.update(window=calibration["window"], from_cache=calibration["from_cache"])
        generator = torch.Generator(device=cond.device).manual_seed(0)  # never the policy's or torch's global RNG
        policy.sampler.sample(policy.denoise, cond, shape, generator=generator)
    info["seconds"] = time.perf_counter() - start
    if verbose:
        detail = ""
        if "window" in info:
            detail = f", window {info['window']} ({'cached' if info['from_cache'] else 'measured and cached'})"
        print(
            f"policy-accel: warmup of {info['sampler']} took {info['seconds']:.2f} s{detail}",
            file=sys.stderr,
            flush=True,
        )
    return info
