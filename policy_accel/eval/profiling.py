"""Where a chunk's time goes: network calls vs sampler bookkeeping, and the batch-cost curve.

A Picard sampler trades sequential rounds for bigger batches, so whether it pays off on a
machine depends on how a network call's cost grows with its batch. This measures that
curve and, per sampler, the time inside network calls, the time outside them, and the
rounds and rows evaluated, on real observations, so the numbers explain the speed-ups.

"In network" is every network the sampler runs: the policy's denoiser it is handed, and for a
sampler with a network of its own (a distilled student, which ignores the teacher's denoiser)
that network's forward calls too.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from policy_accel.device import synchronize
from policy_accel.eval.disturbance import DisturbanceMonitor, assess
from policy_accel.eval.machine import machine_info
from policy_accel.eval.report import disturbance_section
from policy_accel.samplers import build_sampler
from policy_accel.samplers.window_calibration import batch_cost_curve


class TimedDenoiser:
    """Wraps a denoiser, accumulating wall time and rows of every call."""

    def __init__(self, denoiser: Any) -> None:
        self.denoiser, self.seconds, self.calls, self.rows = denoiser, 0.0, 0, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        synchronize(x.device)  # on an accelerator, time the work, not its launch
        start = time.perf_counter()
        out = self.denoiser(x, t, cond)
        synchronize(x.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.rows += x.shape[0]
        return out


@contextmanager
def timing_own_network(sampler: Any, timer: TimedDenoiser) -> Iterator[None]:
    """While active, calls of ``sampler.network`` (a sampler's own network, e.g. a student's) are timed and
    counted into ``timer`` like the denoiser handed to the sampler. A sampler without one is left alone."""
    network = getattr(sampler, "network", None)
    if not isinstance(network, nn.Module):
        yield
        return
    original = network.__dict__.get("forward")  # normally absent: the class's forward
    forward = network.forward

    def timed_forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        synchronize(x.device)
        start = time.perf_counter()
        out = forward(x, *args, **kwargs)
        synchronize(x.device)
        timer.seconds += time.perf_counter() - start
        timer.calls += 1
        timer.rows += x.shape[0]
        return out

    network.forward = timed_forward
    try:
        yield
    finally:
        if original is None:
            del network.forward
        else:
            network.forward = original


def profile_samplers(
    policy: Any,
    samplers: Sequence[Any],
    conds: Sequence[torch.Tensor],
    repeats: int = 3,
    windows: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
) -> dict[str, Any]:
    """Per sampler: median chunk ms, network ms, overhead ms, rounds and rows per chunk over
    ``conds`` (each (1, cond_dim), normalised), best of ``repeats``; plus the cost curve."""
    shape = (1, policy.config.horizon, policy.config.action_dim)
    rows = []
    with DisturbanceMonitor() as monitor:  # was the machine quiet meanwhile (eval/disturbance.py)
        with monitor.span("cost curve"):
            curve = batch_cost_curve(policy.denoise, conds[0], shape, list(windows), timestep=50)
        for spec in samplers:
            sampler = build_sampler(
                spec,
                policy.config.noise_scheduler,
                default_guess_checkpoint=getattr(policy, "default_guess_checkpoint", None),
            )
            with monitor.span(sampler.name):
                rows.append(_profile_one(policy, sampler, spec, conds, shape, repeats))
    return {
        "call_cost_ms": {w: 1e3 * s for w, s in curve.items()},
        "samplers": rows,
        "threads": torch.get_num_threads(),
        "n_conds": len(conds),
        "machine": machine_info(),
        "disturbance": assess(monitor.stop()),
    }


def _profile_one(
    policy: Any, sampler: Any, spec: Any, conds: Sequence[torch.Tensor], shape: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    """One sampler's row of :func:`profile_samplers`."""
    sampler.to(conds[0].device)  # a student's own network runs where the policy's conditioning is
    warm = TimedDenoiser(policy.denoise)
    with timing_own_network(sampler, TimedDenoiser(None)):
        sampler.sample(warm, conds[0], shape, generator=torch.Generator().manual_seed(0))  # warm-up / calibration
    totals, network, outside, rounds, evaluated = [], [], [], [], []
    for index, cond in enumerate(conds):
        best = None
        for _ in range(repeats):
            timed, own = TimedDenoiser(policy.denoise), TimedDenoiser(None)
            with timing_own_network(sampler, own):
                start = time.perf_counter()
                out = sampler.sample(timed, cond, shape, generator=torch.Generator().manual_seed(index))
                total = time.perf_counter() - start
            if best is None or total < best[0]:
                best = (total, timed.seconds + own.seconds, out.stats.rounds, timed.rows + own.rows)
        totals.append(best[0])
        network.append(best[1])
        outside.append(best[0] - best[1])
        rounds.append(best[2])
        evaluated.append(best[3])
    return {
        "sampler": sampler.name,
        "spec": spec if isinstance(spec, (str, dict)) else str(spec),
        "chunk_ms": 1e3 * statistics.median(totals),
        "network_ms": 1e3 * statistics.median(network),
        "overhead_ms": 1e3 * statistics.median(outside),
        "rounds": statistics.mean(rounds),
        "rows": statistics.mean(evaluated),
        "window": getattr(sampler, "calibration", None) and sampler.calibration["window"],
    }


def profile_markdown(report: dict[str, Any]) -> str:
    curve = report["call_cost_ms"]
    lines = [
        *disturbance_section(report.get("disturbance")),
        "| rows per call | " + " | ".join(str(w) for w in curve) + " |",
        "| --- |" + " --- |" * len(curve),
        "| ms per call | " + " | ".join(f"{v:.2f}" for v in curve.values()) + " |",
        "| vs 1 row | " + " | ".join(f"{v / curve[min(curve)]:.1f}x" for v in curve.values()) + " |",
        "",
        "| sampler | chunk ms | in network ms | outside network ms | rounds | rows evaluated | window |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report["samplers"]:
        lines.append(
            f"| {row['sampler']} | {row['chunk_ms']:.1f} | {row['network_ms']:.1f} | "
            f"{row['overhead_ms']:.1f} | {row['rounds']:.1f} | {row['rows']:.0f} | {row['window'] or ''} |"
        )
    machine = report.get("machine")
    if machine:
        lines += ["", "machine: " + ", ".join(f"{key} {value}" for key, value in machine.items())]
    return "\n".join(lines)
