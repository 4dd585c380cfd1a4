"""Evaluation results: the typed per-episode record, the summaries of many episodes and merging.

:class:`EpisodeResult` is the unit every producer emits (the rollout loop today; a latency-aware
evaluation or a distributed executor tomorrow): one initial state (task, seed), its score and length.
Everything else here is computed from records and raw timings: reward statistics with a CI95, latency
percentiles, success per task, pooling of results over disjoint seed batches, speed-ups and seed-paired
comparisons. Results are JSON-able dicts (``report.json``); rendering them is :mod:`policy_accel.eval.report`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from policy_accel.samplers import SampleStats

_CORE_KEYS = ("task", "seed", "max_reward", "success", "length")
_SAMPLER_STATS = ("nfe_per_chunk", "rounds_per_chunk", "final_error_mean", "frac_hit_deadline", "frac_not_converged")
_RUN_KEYS = ("sampler", "warm_start", "env_id", "obs_type", "max_steps")  # equal in every part of a merged result


@dataclass(frozen=True)
class EpisodeResult:
    """One episode: its initial state (``task`` is None for single-task families), max reward over the
    episode, whether it succeeded, its length in control steps, and the family's own episode maxima
    (PushT: ``max_coverage``)."""

    seed: int
    max_reward: float
    success: bool
    length: int
    task: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str | None, int]:
        """What makes two episodes the same start: the task and the seed."""
        return self.task, self.seed

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``task`` only for multi-task families, then the metrics)."""
        head = {} if self.task is None else {"task": self.task}
        core = {"seed": self.seed, "max_reward": self.max_reward, "success": self.success, "length": self.length}
        return {**head, **core, **{k: float(v) for k, v in self.metrics.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpisodeResult:
        return cls(
            seed=int(data["seed"]),
            max_reward=float(data["max_reward"]),
            success=bool(data["success"]),
            length=int(data["length"]),
            task=data.get("task"),
            metrics={k: v for k, v in data.items() if k not in _CORE_KEYS},
        )


def episodes_of(result: Mapping[str, Any]) -> list[EpisodeResult]:
    """The typed episode records of a result dict."""
    return [EpisodeResult.from_dict(e) for e in result["episodes"]]


@dataclass
class Timing:
    """Raw timings of an evaluation, one entry per batched ``select_action`` call: wall time of calls that
    planned a chunk (with the sampler's stats) and of calls that only popped the action queue."""

    chunk_s: list[float] = field(default_factory=list)
    pop_s: list[float] = field(default_factory=list)
    stats: list[SampleStats] = field(default_factory=list)


# ---------------------------------------------------------------- statistics
def ci95_of_mean(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Sample std and the normal-approximation CI95 half-width of the mean (1.96 * std / sqrt(n)); None for n = 1."""
    n = len(values)
    std = float(np.std(values, ddof=1)) if n > 1 else None
    return std, (1.96 * std / math.sqrt(n) if std is not None else None)


def percentiles_ms(ms: Iterable[float]) -> dict[str, Any]:
    """p50/p95/p99/mean of latencies in milliseconds, and how many there are."""
    values = np.asarray(list(ms), dtype=float)
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "mean": None, "n_chunks": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "n_chunks": len(values),
    }


def _finite_mean(values: Sequence[float]) -> float | None:
    """Mean, or None when it is not finite (JSON has no NaN/inf)."""
    mean = float(np.mean(values))
    return mean if math.isfinite(mean) else None


def sampler_stats_summary(stats: Sequence[SampleStats]) -> dict[str, Any]:
    """Mean network calls, rounds and final error per chunk, and how often a chunk hit its deadline or did not converge."""
    if not stats:
        return dict.fromkeys(_SAMPLER_STATS)
    return {
        "nfe_per_chunk": float(np.mean([s.nfe for s in stats])),
        "rounds_per_chunk": float(np.mean([s.rounds for s in stats])),
        "final_error_mean": _finite_mean([s.final_error for s in stats]),
        "frac_hit_deadline": float(np.mean([bool(s.hit_deadline) for s in stats])),
        "frac_not_converged": float(np.mean([not s.converged for s in stats])),
    }


def reward_summary(episodes: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Episode count, mean max reward with its std and CI95 (normal approximation), mean episode length."""
    rewards = np.array([e.max_reward for e in episodes])
    std, ci = ci95_of_mean(rewards)
    return {
        "n_episodes": len(rewards),
        "mean_max_reward": float(rewards.mean()),
        "std_max_reward": std,
        "ci95": ci,
        "episode_length_mean": float(np.mean([e.length for e in episodes])),
    }


def success_rate(episodes: Sequence[EpisodeResult]) -> float:
    """The pooled success rate over episodes."""
    return float(np.mean([e.success for e in episodes]))


def spec_json(spec: Any) -> Any:
    """A JSON-able form of a sampler spec (string, mapping incl. DictConfig, or object)."""
    if spec is None or isinstance(spec, (str, int, float, bool)):
        return spec
    if isinstance(spec, Mapping) or hasattr(spec, "items"):
        return {str(k): spec_json(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)) or (hasattr(spec, "__iter__") and not hasattr(spec, "sample")):
        return [spec_json(v) for v in spec]
    return getattr(spec, "name", repr(spec))


def episode_summary(
    episodes: Sequence[EpisodeResult | Mapping[str, Any]], name: str, sampler: Any, warm_started: bool
) -> dict[str, Any]:
    """Reward statistics of an evaluation's episodes, with the sampler that produced them."""
    records = [e if isinstance(e, EpisodeResult) else EpisodeResult.from_dict(e) for e in episodes]
    stats = reward_summary(records)
    return {
        "sampler": name,
        "sampler_spec": spec_json(sampler if sampler is not None else name),
        "warm_start": warm_started,
        "n_episodes": stats["n_episodes"],
        "mean_max_reward": stats["mean_max_reward"],
        "std_max_reward": stats["std_max_reward"],
        "ci95": stats["ci95"],
        "episode_length_mean": stats["episode_length_mean"],
        "episodes": [e.to_dict() for e in records],
    }


def timing_summary(timing: Timing) -> dict[str, Any]:
    """Chunk and per-action latency of an evaluation, and what the samplers spent."""
    n_calls = len(timing.chunk_s) + len(timing.pop_s)
    policy_s = float(sum(timing.chunk_s) + sum(timing.pop_s))
    return {
        "latency_ms": percentiles_ms(np.asarray(timing.chunk_s) * 1e3),
        # Raw per-chunk latencies, so results over several calls can be pooled exactly (bench).
        "chunk_latencies_ms": [1e3 * s for s in timing.chunk_s],
        "pop_latency_ms": {
            k: v for k, v in percentiles_ms(np.asarray(timing.pop_s) * 1e3).items() if k in ("p50", "mean")
        },
        # Policy time per batched control step: what one env waits per action, on average.
        "per_action_ms": 1e3 * policy_s / n_calls if n_calls else None,
        **sampler_stats_summary(timing.stats),
        "n_policy_calls": n_calls,
        "policy_time_s": policy_s,
    }


# ---------------------------------------------------------------- per task
def _success_ci95(p: float, n: int) -> float | None:
    """Normal-approximation CI95 half-width of a success rate (1.96 * sqrt(p(1-p)/n))."""
    return 1.96 * math.sqrt(p * (1.0 - p) / n) if n > 1 else None


def add_task_breakdown(result: dict[str, Any], task_order: Sequence[str]) -> dict[str, Any]:
    """Add per-task success (with CI95) and their average to a result whose episodes carry ``task``.

    ``success_rate`` becomes the mean over tasks of the per-task rates (the MT10 score; equal to
    the pooled rate when every task has the same seeds) and ``success_ci95`` its CI95 (the tasks'
    variances averaged: sqrt(sum p(1-p)/n) / T). Tasks are listed in ``task_order``.
    """
    episodes = episodes_of(result)
    per_task: dict[str, dict[str, Any]] = {}
    for task in [t for t in task_order if any(e.task == t for e in episodes)]:
        mine = [e for e in episodes if e.task == task]
        p = success_rate(mine)
        per_task[task] = {
            "n_episodes": len(mine),
            "success_rate": p,
            "ci95": _success_ci95(p, len(mine)),
            "episode_length_mean": float(np.mean([e.length for e in mine])),
        }
    rates = [v["success_rate"] for v in per_task.values()]
    variance = sum(v["success_rate"] * (1 - v["success_rate"]) / v["n_episodes"] for v in per_task.values())
    result["per_task"] = per_task
    result["tasks"] = list(per_task)
    result["success_rate"] = float(np.mean(rates))
    result["success_ci95"] = 1.96 * math.sqrt(variance) / len(rates) if result["n_episodes"] > 1 else None
    return result


# ---------------------------------------------------------------- smoothness
def _jump_stats(values: Sequence[float]) -> dict[str, Any]:
    if not len(values):
        return {"mean": None, "p95": None, "n": 0}
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "p95": float(np.percentile(array, 95)), "n": len(array)}


def smoothness_summary(switch: Sequence[float], within: Sequence[float]) -> dict[str, Any]:
    """Mean and p95 of the jumps between consecutive commanded actions (env units) at chunk switches and
    within chunks: a smooth execution's switch jumps look like its within-chunk steps."""
    return {"switch": _jump_stats(switch), "within": _jump_stats(within)}


_EXECUTION_KEYS = ("execution", "delay_steps", "delay_measured_ms", "control_hz", "rtc_guidance", "rtc_span")


def merge_execution(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The execution mode and delay of results over seed batches, and their pooled action jumps."""
    first = parts[0]
    merged: dict[str, Any] = {key: first[key] for key in _EXECUTION_KEYS if key in first}
    if all("action_jumps" in p for p in parts):
        switch = [j for p in parts for j in p["action_jumps"]["switch"]]
        within = [j for p in parts for j in p["action_jumps"]["within"]]
        merged["action_jumps"] = {"switch": switch, "within": within}
        merged["smoothness"] = smoothness_summary(switch, within)
    return merged


# ---------------------------------------------------------------- merging
def _chunk_weighted(parts: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Mean of a per-chunk statistic over all parts' chunks (None if any part's is undefined)."""
    pairs = [(p[key], p["latency_ms"]["n_chunks"]) for p in parts if p["latency_ms"]["n_chunks"]]
    if not pairs or any(value is None for value, _ in pairs):
        return None
    return float(sum(value * n for value, n in pairs) / sum(n for _, n in pairs))


def merge_timing(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pooled latency of several results: percentiles of all raw chunk latencies, call-weighted means."""
    latencies = [ms for p in parts for ms in p["chunk_latencies_ms"]]
    n_calls = sum(p["n_policy_calls"] for p in parts)
    policy_s = sum(p["policy_time_s"] for p in parts)
    pops = [(p["pop_latency_ms"]["mean"] or 0.0, p["n_policy_calls"] - p["latency_ms"]["n_chunks"]) for p in parts]
    n_pops = sum(n for _, n in pops)
    return {
        "latency_ms": percentiles_ms(latencies),
        "chunk_latencies_ms": latencies,
        "pop_latency_ms": {"mean": sum(mean * n for mean, n in pops) / n_pops if n_pops else None},
        "per_action_ms": 1e3 * policy_s / n_calls if n_calls else None,
        **{key: _chunk_weighted(parts, key) for key in _SAMPLER_STATS},
    }


def merge_results(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool results of one sampler over disjoint seed batches into one result (episodes, latencies, counts)."""
    if not parts:
        raise ValueError("merge_results needs at least one result")
    first = parts[0]
    episodes = [e for p in parts for e in episodes_of(p)]
    stats = reward_summary(episodes)
    timing = merge_timing(parts)
    return {
        **{key: first.get(key, False) if key == "warm_start" else first[key] for key in _RUN_KEYS},
        "seeds": [s for p in parts for s in p["seeds"]],
        **{k: stats[k] for k in ("n_episodes", "mean_max_reward", "std_max_reward", "ci95")},
        "success_rate": success_rate(episodes),
        "episode_length_mean": stats["episode_length_mean"],
        "episodes": [e.to_dict() for e in episodes],
        **timing,
        "batch_size": first["batch_size"],
        "batch_sizes": sorted({b for p in parts for b in p["batch_sizes"]}),
        "n_batches": len(parts),
        "n_policy_calls": sum(p["n_policy_calls"] for p in parts),
        "policy_time_s": sum(p["policy_time_s"] for p in parts),
        "wall_time_s": sum(p["wall_time_s"] for p in parts),
        **merge_execution(parts),
    }


# ---------------------------------------------------------------- comparisons
def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator / denominator)


def add_speedups(results: Sequence[dict[str, Any]]) -> None:
    """Speed-up of each result over the first one: chunk-latency p50 ratio (this machine) and
    rounds ratio (sequential network calls: the latency ratio on an accelerator wide enough
    to run a Picard window in the time of one call)."""
    base = results[0]
    for result in results:
        result["speedup_vs_baseline"] = ratio(base["latency_ms"]["p50"], result["latency_ms"]["p50"])
        result["rounds_ratio_vs_baseline"] = ratio(base["rounds_per_chunk"], result["rounds_per_chunk"])


def _paired_mean_ci(diffs: np.ndarray) -> tuple[float, float | None]:
    ci = 1.96 * float(diffs.std(ddof=1)) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return float(diffs.mean()), ci


def episode_key(episode: Mapping[str, Any]) -> tuple[str | None, int]:
    """What makes two episodes (JSON form) the same start: the task (multi-task families) and the seed."""
    return episode.get("task"), int(episode["seed"])


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Reward (and success rate) of ``a`` minus ``b``, paired by start: the honest test of "a beats b".

    Both ran the same initial states (seed, and task on multi-task families), so the per-start differences
    cancel how hard each start is; their CI95 is much tighter than comparing the two means' own CIs. Reads
    only ``seed``, ``task``, ``max_reward`` and (when every episode has it) ``success`` of each episode.
    """
    episodes_b = {episode_key(e): e for e in b["episodes"]}
    pairs = [(e, episodes_b[episode_key(e)]) for e in a["episodes"] if episode_key(e) in episodes_b]
    if not pairs:
        raise ValueError(f"{a.get('label')} and {b.get('label')} share no seeds")
    diffs = np.array([ea["max_reward"] - eb["max_reward"] for ea, eb in pairs])
    mean, ci = _paired_mean_ci(diffs)
    success_diff, success_ci = None, None
    if all("success" in ea and "success" in eb for ea, eb in pairs):
        success_diff, success_ci = _paired_mean_ci(
            np.array([float(ea["success"]) - float(eb["success"]) for ea, eb in pairs])
        )
    return {
        "a": a.get("label"),
        "b": b.get("label"),
        "n_seeds": len(pairs),
        "mean_diff": mean,
        "ci95": ci,
        "a_better": int((diffs > 0).sum()),
        "b_better": int((diffs < 0).sum()),
        "ties": int((diffs == 0).sum()),
        "a_clearly_better": ci is not None and mean - ci > 0,
        "success_diff": success_diff,
        "success_ci95": success_ci,
        "latency_ratio_b_over_a": ratio(b["latency_ms"]["p50"], a["latency_ms"]["p50"]),
    }
