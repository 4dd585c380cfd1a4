"""Pick a Picard window per machine: measured rounds x measured cost per round.

A window of w steps needs fewer sequential rounds, but each round evaluates w rows;
how much a bigger batch costs depends on the hardware (about 3x for 16 rows on a
2-core CPU, nearly free on a GPU). So the window is measured, not assumed.

The choice must be stable (a control loop should not get window 8 one run and 16 the
next because of timer noise): windows within ``TIE_MARGIN`` of the fastest count as tied
and the smallest of them wins (least compute). Every random draw uses a local generator,
so calibrating never moves the global torch RNG.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import torch

from policy_accel.device import timed
from policy_accel.samplers.base import Denoiser

TIE_MARGIN = 0.10  # latencies within 10 % of the fastest are a tie: the smallest such window wins

if TYPE_CHECKING:
    from policy_accel.samplers.picard import PicardSampler


def default_candidates(num_steps: int) -> list[int]:
    candidates, w = [], 1
    while w < num_steps:
        candidates.append(w)
        w *= 2
    return sorted(set(candidates + [num_steps]))


def batch_cost_curve(
    denoiser: Denoiser,
    cond: torch.Tensor,
    shape: tuple[int, int, int],
    windows: list[int],
    timestep: int,
    repeats: int = 5,
    seed: int = 0,
) -> dict[int, float]:
    """Median seconds of one network call on ``w * batch`` rows, per window ``w``."""
    curve = {}
    generator = torch.Generator(device=cond.device).manual_seed(seed)
    with torch.inference_mode():
        for w in windows:
            x = torch.randn((w * shape[0], *shape[1:]), dtype=cond.dtype, device=cond.device, generator=generator)
            t = torch.full((w * shape[0],), timestep, dtype=torch.long, device=cond.device)
            c = cond.repeat(w, 1)
            denoiser(x, t, c)  # warm-up
            times: list[float] = []
            for _ in range(repeats):
                with timed(cond.device, times):  # synchronised: an accelerator's launch is not its cost
                    denoiser(x, t, c)
            curve[w] = statistics.median(times)
    return curve


def choose_window(latency: dict[int, float], margin: float = TIE_MARGIN) -> int:
    """The smallest window whose latency is within ``margin`` of the fastest (a stable tie rule)."""
    best = min(latency.values())
    return min(w for w, seconds in latency.items() if seconds <= best * (1.0 + margin))


def calibrate_window(
    sampler: PicardSampler,
    denoiser: Denoiser,
    cond: torch.Tensor,
    shape: tuple[int, int, int],
    repeats: int = 2,
    seed: int = 0,
) -> dict[str, Any]:
    """Time full Picard solves for each candidate window and return the fastest, with the
    batch-cost curve and round counts that explain the choice."""
    n = sampler.solver.num_steps
    windows = [w for w in (sampler.auto_candidates or default_candidates(n)) if 1 <= w <= n]
    curve = batch_cost_curve(denoiser, cond, shape, windows, int(sampler.solver.timesteps[0]))
    generator = torch.Generator(device=cond.device).manual_seed(seed)
    noise = torch.randn((n + 1, *shape), generator=generator, dtype=cond.dtype, device=cond.device)
    latency, rounds = {}, {}
    for w in windows:
        sampler.sample(denoiser, cond, shape, noise=noise, window=w)  # warm-up
        times: list[float] = []
        for _ in range(repeats):
            with timed(cond.device, times):
                out = sampler.sample(denoiser, cond, shape, noise=noise, window=w)
        latency[w], rounds[w] = min(times), out.stats.rounds
    chosen = choose_window(latency)
    return {
        "window": chosen,
        "tie_margin": TIE_MARGIN,
        "candidates": windows,
        "latency_s": latency,
        "rounds": rounds,
        "call_cost_s": curve,
        "batch_size": shape[0],
    }
