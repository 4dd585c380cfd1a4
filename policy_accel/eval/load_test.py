"""Chunk latency while another process competes for the CPU, per torch thread count.

On a robot the policy rarely has the CPU to itself (drivers, perception, logging). With
more torch threads than free cores, one descheduled OpenMP worker stalls every parallel
region of the network, so p99 latency explodes. This measures p50/p99/max chunk latency
for each thread count, alone and beside ``competitors`` busy processes, side by side.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any, Sequence

import numpy as np

from policy_accel.device import timed


def _busy(stop: Any, loops: Any) -> None:
    """A CPU-bound competitor: spin until told to stop, counting its 100k-step loops (the proof it ran)."""
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1
        with loops.get_lock():
            loops.value += 1


def _percentiles(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
        "mean_ms": float(ms.mean()),
        "n_chunks": int(len(ms)),
    }


def chunk_latencies(policy: Any, obs_history: np.ndarray, chunks: int, budget_s: float) -> list[float]:
    """Time ``chunks`` plans of ``obs_history`` (stopping early once ``budget_s`` is spent)."""
    policy.predict_action_chunk(obs_history)  # warm-up
    times: list[float] = []
    started = time.perf_counter()
    for _ in range(chunks):
        with timed(policy.device, times):  # synchronised on an accelerator
            policy.predict_action_chunk(obs_history)
        if time.perf_counter() - started > budget_s:
            break
    return times


def latency_under_load(
    policy: Any,
    obs_history: np.ndarray,
    thread_counts: Sequence[int],
    competitors: int,
    chunks: int,
    budget_s: float = 60.0,
) -> list[dict[str, Any]]:
    """One row per (threads, load): p50/p99/max chunk ms, measured alone and with ``competitors`` busy processes.

    Loaded rows carry ``competitor_loops``: how many 100k-step loops the competitors ran meanwhile (> 0 shows the
    load was really there)."""
    rows = []
    for load in (0, competitors):
        stop = mp.Event()
        loops = mp.Value("q", 0)
        procs = [mp.Process(target=_busy, args=(stop, loops), daemon=True) for _ in range(load)]
        for proc in procs:
            proc.start()
        time.sleep(0.5 if load else 0.0)  # let the competitors reach full speed
        try:
            for threads in thread_counts:
                policy.threads = int(threads)
                before = loops.value
                times = chunk_latencies(policy, obs_history, chunks, budget_s)
                row = {"threads": int(threads), "competing_processes": load, **_percentiles(times)}
                if load:
                    row["competitor_loops"] = int(loops.value - before)
                rows.append(row)
        finally:
            stop.set()
            for proc in procs:
                proc.join(timeout=5)
    return rows


def load_test_markdown(rows: Sequence[dict[str, Any]], sampler: str) -> str:
    lines = [
        "| sampler | torch threads | competing busy processes | chunk p50 ms | p99 ms | max ms | chunks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {sampler} | {r['threads']} | {r['competing_processes']} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['n_chunks']} |"
        )
    return "\n".join(lines)


__all__ = ["chunk_latencies", "latency_under_load", "load_test_markdown"]
