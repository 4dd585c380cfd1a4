"""Benchmark figures: the reward/latency trade-off with its Pareto front, and latency spread.

Figures are drawn on a bare ``Figure`` with the Agg canvas rather than through pyplot,
so plotting never touches a global backend or figure registry (safe in tests, threads
and headless runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogFormatter

_PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 20, not 2x10^1, on log axes


def _label(result: Mapping[str, Any]) -> str:
    return str(result.get("label") or result.get("sampler") or "?")


def pareto_front(results: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indices of results no other result dominates (latency p50 <= and reward >=, one strictly),
    sorted by latency. Results without a latency are left out."""
    points = [
        (i, r["latency_ms"]["p50"], r["mean_max_reward"])
        for i, r in enumerate(results)
        if (r.get("latency_ms") or {}).get("p50") is not None
    ]

    def dominated(lat: float, reward: float) -> bool:
        return any(l2 <= lat and r2 >= reward and (l2 < lat or r2 > reward) for _, l2, r2 in points)

    return [i for i, lat, reward in sorted(points, key=lambda p: (p[1], -p[2])) if not dominated(lat, reward)]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_reward_vs_latency(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Mean max reward (± CI95) against chunk-latency p50 (log x), Pareto front drawn through."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    timed = [r for r in results if (r.get("latency_ms") or {}).get("p50") is not None]
    rank = {id(r): i for i, r in enumerate(sorted(timed, key=lambda r: r["latency_ms"]["p50"]))}
    for result in timed:
        latency, index = result["latency_ms"]["p50"], rank[id(result)]
        ax.errorbar(latency, result["mean_max_reward"], yerr=result.get("ci95") or 0.0, fmt="o", capsize=3)
        # Alternate above/below along x so neighbours (a sampler and its Picard twin) stay readable.
        ax.annotate(
            _label(result),
            (latency, result["mean_max_reward"]),
            textcoords="offset points",
            xytext=(5, 6 if index % 2 == 0 else -12),
            fontsize=8,
        )
    front = pareto_front(results)
    if front:
        ax.plot(
            [results[i]["latency_ms"]["p50"] for i in front],
            [results[i]["mean_max_reward"] for i in front],
            "--",
            color="0.4",
            drawstyle="steps-post",
            label="Pareto front",
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(_PLAIN)
    ax.xaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1.5, 0.5)))
    ax.set_xlabel("chunk latency p50 (ms, log scale)")
    ax.set_ylabel("mean max reward (± CI95)")
    ax.set_title("Reward vs latency")
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def plot_latency_distributions(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Box plot of every sampler's per-chunk latencies (log y: samplers differ by orders of magnitude)."""
    shown = [r for r in results if r.get("chunk_latencies_ms")]
    fig = Figure(figsize=(max(5.0, 1.1 * len(shown) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    if shown:
        ax.boxplot([r["chunk_latencies_ms"] for r in shown], whis=(1, 99), showfliers=True)
        ax.set_xticks(range(1, len(shown) + 1), [_label(r) for r in shown], rotation=30, ha="right")
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(_PLAIN)
        ax.yaxis.set_minor_formatter(LogFormatter(minor_thresholds=(1.5, 0.5)))
    ax.set_ylabel("chunk latency (ms, log scale)")
    ax.set_title("Per-chunk latency (whiskers: p1-p99)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return _save(fig, path)


MODE_STYLE = {"blocking": ("C3", "s"), "async": ("C1", "v"), "blend": ("C2", "D"), "rtc": ("C0", "o")}


def plot_reward_vs_delay(results: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Per sampler (a row): mean max reward (± CI95) and the p95 action jump at chunk switches against the
    delay, one line per execution mode (the RTC paper's figure); the ``sync`` run is the dotted reference."""
    bases: list[str] = []
    for r in results:
        base = _label(r).split("/")[0]
        if base not in bases:
            bases.append(base)
    fig = Figure(figsize=(11, 3.6 * len(bases)), layout="constrained")
    axes = fig.subplots(len(bases), 2, squeeze=False)
    for row, base in enumerate(bases):
        reward_ax, jump_ax = axes[row]
        mine = [r for r in results if _label(r).split("/")[0] == base]
        for r in mine:
            if r.get("execution", "sync") == "sync":
                reward_ax.axhline(r["mean_max_reward"], color="k", lw=0.8, ls=":", label="sync (no latency)")
                within = ((r.get("smoothness") or {}).get("within") or {}).get("p95")
                if within is not None:
                    jump_ax.axhline(within, color="k", lw=0.8, ls=":", label="sync, within a chunk")
        for mode, (color, marker) in MODE_STYLE.items():
            runs = sorted((r for r in mine if r.get("execution") == mode), key=lambda r: r["delay_steps"])
            if not runs:
                continue
            delays = [r["delay_steps"] for r in runs]
            reward_ax.errorbar(
                delays,
                [r["mean_max_reward"] for r in runs],
                yerr=[r.get("ci95") or 0 for r in runs],
                fmt=f"{marker}-",
                color=color,
                ms=4,
                capsize=2,
                label=mode,
            )
            jumps = [((r.get("smoothness") or {}).get("switch") or {}).get("p95") for r in runs]
            jump_ax.plot(
                delays,
                [j if j is not None else float("nan") for j in jumps],
                f"{marker}-",
                color=color,
                ms=4,
                label=mode,
            )
        reward_ax.set_title(f"{base}: reward vs inference delay")
        reward_ax.set_xlabel("delay (control steps)")
        reward_ax.set_ylabel("mean max reward")
        reward_ax.legend(fontsize=7)
        jump_ax.set_title(f"{base}: action jump at chunk switches (p95)")
        jump_ax.set_xlabel("delay (control steps)")
        jump_ax.set_ylabel("env units")
        jump_ax.legend(fontsize=7)
    return _save(fig, path)
