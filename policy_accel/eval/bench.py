"""Latency/reward benchmark of many samplers on the same seeds, interleaved batch by batch.

Running sampler A on all seeds and then sampler B lets machine drift (thermal state, a
neighbour's job, frequency scaling) land on one sampler only. Here every seed batch is
run by every sampler back to back, in an order rotated per batch, and the per-batch
results are pooled afterwards; latency percentiles come from the pooled raw per-chunk
latencies, not from averaging per-batch percentiles. Each sampler is built once, so a
Picard sampler with ``window: auto`` calibrates once and keeps its window.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from policy_accel.device import device_info
from policy_accel.eval.metaworld_rollout import (
    add_task_breakdown,
    evaluate_metaworld,
    is_metaworld_env,
    metaworld_table,
)
from policy_accel.eval.report import _fmt, json_safe, machine_info
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.samplers import Sampler, build_sampler

BENCH_COLUMNS = (
    "sampler",
    "episodes",
    "mean max reward ± CI95",
    "success",
    "chunk p50 / p95 / p99 ms",
    "per-action ms",
    "NFE/chunk",
    "rounds/chunk",
    "speed-up (latency)",
    "speed-up (rounds)",
)
_CHUNK_WEIGHTED = ("nfe_per_chunk", "rounds_per_chunk", "final_error_mean", "frac_hit_deadline", "frac_not_converged")


class BenchSpecError(ValueError):
    """A benchmark sampler entry that cannot be built or does not fit the policy."""


@dataclass
class BenchEntry:
    """A sampler built once for the whole benchmark, with the spec it came from."""

    label: str
    spec: dict[str, Any]
    sampler: Sampler
    warm_start: bool = False  # a policy option, not the sampler's: reuse the last chunk's solution
    compile: bool | str = False  # a policy option: the denoiser's compile backend for this entry (cached per mode)


def _plain(spec: Any) -> dict[str, Any]:
    """A sampler spec (name string, mapping or DictConfig) as a plain dict."""
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)  # type: ignore[return-value]
    if isinstance(spec, Mapping):
        return dict(spec)
    raise BenchSpecError(f"a benchmark sampler must be a name or a mapping, got {type(spec).__name__}")


def prepare_samplers(
    policy: Any, specs: Sequence[Any], default_compile: bool | str = False
) -> tuple[list[BenchEntry], list[dict[str, Any]]]:
    """Build every spec once; skip (and report why) entries whose weights are not there yet.

    Skipped: a spec whose ``checkpoint`` file does not exist (a student not distilled yet), and a
    student distilled for another policy (checked by attaching it): the default list's students
    belong to the shipped teacher, so another checkpoint (e.g. a LeRobot folder) benches the rest.
    Any other bad spec raises :class:`BenchSpecError`.
    """
    entries: list[BenchEntry] = []
    skipped: list[dict[str, Any]] = []
    for raw in specs:
        spec = _plain(raw)
        checkpoint = spec.get("checkpoint")
        if checkpoint is not None and not Path(str(checkpoint)).is_file():
            skipped.append({"spec": spec, "reason": f"checkpoint '{checkpoint}' not found"})
            continue
        options = {k: v for k, v in spec.items() if k not in ("warm_start", "compile")}
        warm_start = spec.get("warm_start", False)
        if not isinstance(warm_start, bool):
            raise BenchSpecError(f"sampler {spec}: warm_start must be true or false, got {warm_start!r}")
        compile_mode = spec.get("compile", default_compile)
        if not (isinstance(compile_mode, bool) or compile_mode in ("freeze", "inductor", "reduce-overhead")):
            raise BenchSpecError(
                f"sampler {spec}: compile must be true, false, freeze, inductor or "
                f"reduce-overhead, got {compile_mode!r}"
            )
        try:
            sampler = build_sampler(options, policy.config.noise_scheduler)
        except (ValueError, TypeError) as exc:
            raise BenchSpecError(f"sampler {spec}: {exc}") from exc
        previous = policy.sampler
        try:
            policy.set_sampler(sampler)  # raises if a student does not fit this policy
        except ValueError as exc:
            if hasattr(sampler, "check_compatible"):  # a student of another teacher
                skipped.append({"spec": spec, "reason": f"does not fit this policy: {exc}"})
                continue
            raise BenchSpecError(f"sampler {spec}: {exc}") from exc
        finally:
            policy.set_sampler(previous)
        suffix = ("+warm" if warm_start else "") + (
            f"+{compile_mode}" if isinstance(compile_mode, str) else "+compiled" if compile_mode else ""
        )
        label = str(spec.get("label") or (sampler.name + suffix))
        if any(e.label == label for e in entries):
            raise BenchSpecError(f"two benchmark samplers are both labelled '{label}'; give one a 'label'")
        entries.append(BenchEntry(label, spec, sampler, warm_start, compile_mode))
    return entries, skipped


def _latency_summary(ms: Sequence[float]) -> dict[str, Any]:
    if not ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "n_chunks": 0}
    values = np.asarray(ms, dtype=float)
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(values.mean()),
        "n_chunks": len(values),
    }


def _chunk_weighted(parts: Sequence[Mapping[str, Any]], key: str) -> float | None:
    """Mean of a per-chunk statistic over all parts' chunks (None if any part's is undefined)."""
    pairs = [(p[key], p["latency_ms"]["n_chunks"]) for p in parts if p["latency_ms"]["n_chunks"]]
    if not pairs or any(value is None for value, _ in pairs):
        return None
    return float(sum(value * n for value, n in pairs) / sum(n for _, n in pairs))


def merge_results(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Pool ``evaluate_policy`` results of one sampler over disjoint seed batches into one result."""
    if not parts:
        raise ValueError("merge_results needs at least one result")
    episodes = [e for p in parts for e in p["episodes"]]
    rewards = np.array([e["max_reward"] for e in episodes])
    n = len(rewards)
    std = float(rewards.std(ddof=1)) if n > 1 else None
    latencies = [ms for p in parts for ms in p["chunk_latencies_ms"]]
    n_calls = sum(p["n_policy_calls"] for p in parts)
    policy_s = sum(p["policy_time_s"] for p in parts)
    n_pops = sum(p["n_policy_calls"] - p["latency_ms"]["n_chunks"] for p in parts)
    pop_ms = sum(
        (p["pop_latency_ms"]["mean"] or 0.0) * (p["n_policy_calls"] - p["latency_ms"]["n_chunks"]) for p in parts
    )
    first = parts[0]
    return {
        "sampler": first["sampler"],
        "warm_start": first.get("warm_start", False),
        "env_id": first["env_id"],
        "obs_type": first["obs_type"],
        "max_steps": first["max_steps"],
        "seeds": [s for p in parts for s in p["seeds"]],
        "n_episodes": n,
        "mean_max_reward": float(rewards.mean()),
        "std_max_reward": std,
        "ci95": 1.96 * std / math.sqrt(n) if std is not None else None,  # normal approximation
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "episode_length_mean": float(np.mean([e["length"] for e in episodes])),
        "episodes": episodes,
        "latency_ms": _latency_summary(latencies),
        "chunk_latencies_ms": latencies,
        "pop_latency_ms": {"mean": pop_ms / n_pops if n_pops else None},
        "per_action_ms": 1e3 * policy_s / n_calls if n_calls else None,
        **{key: _chunk_weighted(parts, key) for key in _CHUNK_WEIGHTED},
        "batch_size": first["batch_size"],
        "batch_sizes": sorted({b for p in parts for b in p["batch_sizes"]}),
        "n_batches": len(parts),
        "n_policy_calls": n_calls,
        "policy_time_s": policy_s,
        "wall_time_s": sum(p["wall_time_s"] for p in parts),
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator / denominator)


def add_speedups(results: Sequence[dict[str, Any]]) -> None:
    """Speed-up of each result over the first one: chunk-latency p50 ratio (this machine) and
    rounds ratio (sequential network calls: the latency ratio on an accelerator wide enough
    to run a Picard window in the time of one call)."""
    base = results[0]
    for result in results:
        result["speedup_vs_baseline"] = _ratio(base["latency_ms"]["p50"], result["latency_ms"]["p50"])
        result["rounds_ratio_vs_baseline"] = _ratio(base["rounds_per_chunk"], result["rounds_per_chunk"])


def _paired_mean_ci(diffs: np.ndarray) -> tuple[float, float | None]:
    ci = 1.96 * float(diffs.std(ddof=1)) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    return float(diffs.mean()), ci


def _episode_key(episode: Mapping[str, Any]) -> tuple[Any, int]:
    """What makes two episodes the same start: the seed, and on Meta-World the task (a seed is one
    episode per task there)."""
    return episode.get("task"), int(episode["seed"])


def paired_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Reward (and success rate) of ``a`` minus ``b``, paired by seed: the honest test of "a beats b".

    Both ran the same initial states (seed, and task on Meta-World), so the per-start differences
    cancel how hard each start is; their CI95 is much tighter than comparing the two means' own CIs.
    """
    episodes_b = {_episode_key(e): e for e in b["episodes"]}
    pairs = [(e, episodes_b[_episode_key(e)]) for e in a["episodes"] if _episode_key(e) in episodes_b]
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
        "latency_ratio_b_over_a": _ratio(b["latency_ms"]["p50"], a["latency_ms"]["p50"]),
    }


def _check_pairs(pairs: Sequence[Sequence[str]]) -> None:
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise BenchSpecError(f"a comparison must be a pair [label_a, label_b], got {pair!r}")


def compare_pairs(
    results: Sequence[Mapping[str, Any]], pairs: Sequence[Sequence[str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Paired differences for each ``[label_a, label_b]``; pairs naming a sampler that is not
    in this run (e.g. its checkpoint was skipped) come back as notes, never silently dropped."""
    _check_pairs(pairs)
    by_label = {r["label"]: r for r in results}
    comparisons, notes = [], []
    for pair in pairs:
        a, b = (str(x) for x in pair)
        missing = [x for x in (a, b) if x not in by_label]
        if missing:
            notes.append(
                {"pair": [a, b], "reason": f"no sampler labelled {missing} in this run; labels: {sorted(by_label)}"}
            )
            continue
        comparisons.append(paired_difference(by_label[a], by_label[b]))
    return comparisons, notes


def run_benchmark(
    policy: Any,
    samplers: Sequence[Any],
    env_cfg: Any,
    seeds: Sequence[int],
    n_envs: int,
    max_steps: int,
    progress: bool = True,
    checkpoint: str | None = None,
    compare: Sequence[Sequence[str]] = (),
    compile: bool | str = False,
) -> dict[str, Any]:
    """Every sampler on every seed batch (order rotated per batch), pooled per sampler.

    ``samplers`` are specs for :func:`build_sampler` (optionally with ``label``); the first
    one that is available is the baseline of the speed-ups. ``compare`` lists label pairs
    whose seed-paired reward difference the report gives (e.g. a student vs DDIM at the
    same step count). ``compile`` is every entry's default compile backend (an entry's own
    ``compile`` key overrides it; DDPM-100 eager beside ParaDDPM compiled, say). Returns a JSON-able dict with ``results`` (one pooled result per
    sampler, in the given order), ``baseline``, ``comparisons``, ``skipped``,
    ``batch_orders``, ``machine``, ``seeds``, ``n_envs`` and ``checkpoint``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_benchmark needs at least one seed")
    if int(n_envs) < 1 or int(max_steps) < 1:
        raise ValueError(f"n_envs and max_steps must be >= 1, got {n_envs} and {max_steps}")
    n_envs, max_steps = int(n_envs), int(max_steps)
    _check_pairs(compare)  # before the long run, not after it
    entries, skipped = prepare_samplers(policy, samplers, default_compile=compile)
    for entry in entries:  # compile every backend once, now, outside the timed rollouts
        policy.compile(entry.compile)
    policy.compile(False)
    for note in skipped:
        print(f"bench: skipping sampler {note['spec']}: {note['reason']}")
    if not entries:
        raise ValueError("no sampler left to benchmark")

    batches = [seeds[i : i + n_envs] for i in range(0, len(seeds), n_envs)]
    parts: dict[str, list[dict[str, Any]]] = {e.label: [] for e in entries}
    orders: list[list[str]] = []
    evaluate = evaluate_metaworld if is_metaworld_env(env_cfg) else evaluate_policy  # Meta-World: every task per seed
    with tqdm(total=len(batches) * len(entries), desc="bench", unit="run", disable=not progress) as pbar:
        for index, batch in enumerate(batches):
            shift = index % len(entries)
            order = entries[shift:] + entries[:shift]
            orders.append([e.label for e in order])
            for entry in order:
                pbar.set_postfix_str(f"batch {index + 1}/{len(batches)} {entry.label}")
                policy.compile(entry.compile)  # cached: switching backends costs nothing after the first
                parts[entry.label].append(
                    evaluate(
                        policy,
                        sampler=entry.sampler,
                        env_cfg=env_cfg,
                        seeds=batch,
                        n_envs=n_envs,
                        progress=False,
                        max_steps=max_steps,
                        warm_start=entry.warm_start,
                    )
                )
                pbar.update()

    results = []
    for entry in entries:
        result = merge_results(parts[entry.label])
        if "task" in result["episodes"][0]:  # Meta-World: success per task and their mean
            add_task_breakdown(result)
        result.update(
            label=entry.label,
            sampler=entry.label,
            sampler_spec=entry.spec,
            compile=entry.compile,
            calibration=getattr(entry.sampler, "calibration", None),
        )
        results.append(result)
    add_speedups(results)
    comparisons, comparison_notes = compare_pairs(results, compare)
    for note in comparison_notes:
        print(f"bench: no comparison {note['pair']}: {note['reason']}")
    return {
        "results": results,
        "baseline": entries[0].label,
        "comparisons": comparisons,
        "skipped": skipped + comparison_notes,
        "batch_orders": orders,
        "machine": machine_info(),
        "device": device_info(policy.device),
        "seeds": seeds,
        "n_envs": n_envs,
        "max_steps": max_steps,
        "checkpoint": checkpoint,
    }


# ------------------------------------------------------------------ report
def _bench_row(result: Mapping[str, Any]) -> list[str]:
    lat = result.get("latency_ms") or {}
    ci = result.get("ci95")
    speedup, rounds = result.get("speedup_vs_baseline"), result.get("rounds_ratio_vs_baseline")
    return [
        str(result.get("label", result.get("sampler", "?"))),
        str(result.get("n_episodes", "?")),
        _fmt(result.get("mean_max_reward")) + (f" ± {_fmt(ci)}" if ci is not None else ""),
        _fmt(result.get("success_rate"), 2),
        " / ".join(_fmt(lat.get(k), 1) for k in ("p50", "p95", "p99")),
        _fmt(result.get("per_action_ms"), 2),
        _fmt(result.get("nfe_per_chunk"), 1),
        _fmt(result.get("rounds_per_chunk"), 1),
        f"{speedup:.2f}x" if speedup is not None else "n/a",
        f"{rounds:.2f}x" if rounds is not None else "n/a",
    ]


def bench_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The benchmark's Markdown table, one row per sampler in the given order."""
    lines = ["| " + " | ".join(BENCH_COLUMNS) + " |", "|" + "|".join("---" for _ in BENCH_COLUMNS) + "|"]
    lines += ["| " + " | ".join(_bench_row(r)) + " |" for r in results]
    return "\n".join(lines)


def _signed(value: float | None, ci: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" + (f" ± {ci:.3f}" if ci is not None else "")


def comparison_table(comparisons: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of seed-paired reward and success differences."""
    header = (
        "A",
        "B",
        "seeds",
        "reward A - B ± CI95",
        "A better / B better / tie",
        "A clearly better",
        "success A - B ± CI95",
        "latency B / A",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for c in comparisons:
        ratio = c.get("latency_ratio_b_over_a")
        lines.append(
            "| "
            + " | ".join(
                [
                    str(c["a"]),
                    str(c["b"]),
                    str(c["n_seeds"]),
                    _signed(c["mean_diff"], c.get("ci95")),
                    f"{c['a_better']} / {c['b_better']} / {c['ties']}",
                    "yes" if c["a_clearly_better"] else "no",
                    _signed(c.get("success_diff"), c.get("success_ci95")),
                    f"{ratio:.2f}x" if ratio is not None else "n/a",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def _calibration_line(result: Mapping[str, Any]) -> str | None:
    cal = result.get("calibration")
    if not cal:
        return None
    rounds = ", ".join(f"w{w}: {r}" for w, r in cal.get("rounds", {}).items())
    cost = ", ".join(f"w{w}: {1e3 * s:.1f}" for w, s in cal.get("call_cost_s", {}).items())
    return (
        f"- {result.get('label')}: window {cal.get('window')} (calibrated at batch {cal.get('batch_size')}); "
        f"rounds per candidate {rounds}; ms per network call {cost}"
    )


def bench_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the table, what the columns mean, calibrations, skips, machine, command."""
    seeds = list(report.get("seeds", []))
    calibrations = [line for r in report["results"] if (line := _calibration_line(r))]
    metaworld = any("per_task" in r for r in report["results"])
    reward_note = (
        ""
        if metaworld
        else "Mean max reward is Diffusion Policy's coverage score with a normal-approximation CI95 (1.96 · std / √n). "
    )
    lines = [
        "# Sampler benchmark",
        "",
        bench_table(report["results"]),
        "",
        *(
            [
                "## Meta-World success per task",
                "",
                metaworld_table(report["results"]),
                "",
                "Success is the mean over tasks of each task's success rate; its CI95 is the normal approximation "
                "(1.96 · sqrt(Σ p(1-p)/n) / tasks). One seed is one episode per task. Mean max reward above is "
                "Meta-World's dense reward (0-10).",
                "",
            ]
            if metaworld
            else []
        ),
        f"Baseline: {report.get('baseline')}. Speed-up (latency) is the baseline's chunk-latency p50 "
        "over the sampler's on this machine; speed-up (rounds) is the ratio of sequential network "
        "calls per chunk, the latency ratio on an accelerator wide enough for a whole Picard window. "
        f"{reward_note}Samplers ran interleaved on the same seed batches, order rotated per batch.",
        "",
        f"- checkpoint: {report.get('checkpoint')}",
        f"- seeds: {seeds[0]} … {seeds[-1]} ({len(seeds)} seeds), {report.get('n_envs')} envs per batch, "
        f"max {report.get('max_steps')} steps"
        if seeds
        else "- seeds: none",
    ]
    if report.get("comparisons"):
        lines += [
            "",
            "## Paired comparisons",
            "",
            comparison_table(report["comparisons"]),
            "",
            "Reward and success-rate differences A - B over the same seeds (paired), with a "
            'normal-approximation CI95 of the per-seed differences; "clearly" means the whole reward '
            "CI95 lies above 0.",
        ]
    if calibrations:
        lines += ["", "## Picard window calibration", "", *calibrations]
    if report.get("skipped"):
        lines += ["", "## Skipped", ""]
        lines += [f"- {note.get('spec', note.get('pair'))}: {note['reason']}" for note in report["skipped"]]
    lines += ["", "## Machine", "", *[f"- {k}: {v}" for k, v in (report.get("machine") or {}).items()]]
    lines += [
        f"- device: {v}" if k == "device" else f"- device {k}: {v}"
        for k, v in (report.get("device") or {}).items()
        if k != "torch"
    ]
    if report.get("command"):
        lines += ["", "## Command", "", f"    {report['command']}"]
    return "\n".join(lines) + "\n"


def write_bench_report(report: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (everything, raw latencies included) and ``report.md``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(bench_markdown(report), encoding="utf-8")
    return json_path, md_path
