"""Pick a Picard window per machine: measured rounds x measured cost per round.

A window of w steps needs fewer sequential rounds, but each round evaluates w rows;
how much a bigger batch costs depends on the hardware (about 3x for 16 rows on a
2-core CPU, nearly free on a GPU). So the window is measured, not assumed.
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING, Any

import torch

from policy_accel.samplers.base import Denoiser

if TYPE_CHECKING:
    from policy_accel.samplers.picard import PicardSampler


def default_candidates(num_steps: int) -> list[int]:
    candidates, w = [], 1
    while w < num_steps:
        candidates.append(w)
        w *= 2
    return sorted(set(candidates + [num_steps]))


def batch_cost_curve(denoiser: Denoiser, cond: torch.Tensor, shape: tuple[int, int, int],
                     windows: list[int], timestep: int, repeats: int = 5) -> dict[int, float]:
    """Median seconds of one network call on ``w * batch`` rows, per window ``w``."""
    curve = {}
    with torch.inference_mode():
        for w in windows:
            x = torch.randn((w * shape[0], *shape[1:]), dtype=cond.dtype)
            t = torch.full((w * shape[0],), timestep, dtype=torch.long)
            c = cond.repeat(w, 1)
            denoiser(x, t, c)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                denoiser(x, t, c)
                times.append(time.perf_counter() - start)
            curve[w] = statistics.median(times)
    return curve


def calibrate_window(sampler: "PicardSampler", denoiser: Denoiser, cond: torch.Tensor,
                     shape: tuple[int, int, int], repeats: int = 2, seed: int = 0) -> dict[str, Any]:
    """Time full Picard solves for each candidate window and return the fastest, with the
    batch-cost curve and round counts that explain the choice."""
    n = sampler.solver.num_steps
    windows = [w for w in (sampler.auto_candidates or default_candidates(n)) if 1 <= w <= n]
    curve = batch_cost_curve(denoiser, cond, shape, windows, int(sampler.solver.timesteps[0]))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((n + 1, *shape), generator=generator, dtype=cond.dtype)
    latency, rounds = {}, {}
    for w in windows:
        sampler.sample(denoiser, cond, shape, noise=noise, window=w)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            out = sampler.sample(denoiser, cond, shape, noise=noise, window=w)
            best = min(best, time.perf_counter() - start)
        latency[w], rounds[w] = best, out.stats.rounds
    chosen = min(windows, key=lambda w: latency[w])
    return {"window": chosen, "candidates": windows, "latency_s": latency, "rounds": rounds,
            "call_cost_s": curve, "batch_size": shape[0]}
