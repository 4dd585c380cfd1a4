"""Render results: the Markdown tables and reports of ``eval`` and ``bench``, and their JSON files.

Results are the dicts of :func:`policy_accel.eval.rollout.evaluate_policy` and
:func:`policy_accel.eval.bench.run_benchmark`; the JSON keeps everything (per-episode scores, raw
latencies, machine facts) so a later benchmark can re-tabulate without re-running, and the Markdown
is what a human reads. The figures are :mod:`policy_accel.eval.plots`. Family-specific wording
(what max reward means, the per-task table) comes from the result's env family.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from policy_accel.eval.disturbance import quiet_line, warning_lines
from policy_accel.eval.families import family_for

COLUMNS = (
    "sampler",
    "episodes",
    "mean max reward ± CI95",
    "success",
    "chunk p50 / p95 / p99 ms",
    "per-action ms",
    "NFE/chunk",
    "rounds/chunk",
    "batch",
)
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
_SHORT_TASKS = {"button-press-topdown": "button-topdown", "peg-insert-side": "peg-insert"}  # narrow table columns


# ---------------------------------------------------------------- cells
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _times(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def _signed(value: float | None, ci: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" + (f" ± {ci:.3f}" if ci is not None else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _score_cells(result: Mapping[str, Any]) -> list[str]:
    """Episodes, reward ± CI95, success, chunk latency percentiles, per-action ms, NFE and rounds."""
    lat = result.get("latency_ms") or {}
    ci = result.get("ci95")
    return [
        str(result.get("n_episodes", "?")),
        _fmt(result.get("mean_max_reward")) + (f" ± {_fmt(ci)}" if ci is not None else ""),
        _fmt(result.get("success_rate"), 2),
        " / ".join(_fmt(lat.get(k), 1) for k in ("p50", "p95", "p99")),
        _fmt(result.get("per_action_ms"), 2),
        _fmt(result.get("nfe_per_chunk"), 1),
        _fmt(result.get("rounds_per_chunk"), 1),
    ]


# ---------------------------------------------------------------- tables
def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The evaluation table: one row per result (sampler), in the given order."""
    rows = [[str(r.get("sampler", "?")), *_score_cells(r), _fmt(r.get("batch_size"))] for r in results]
    return _table(COLUMNS, rows)


def bench_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The benchmark's table, one row per sampler in the given order, with speed-ups over the baseline."""
    rows = [
        [
            str(r.get("label", r.get("sampler", "?"))),
            *_score_cells(r),
            _times(r.get("speedup_vs_baseline")),
            _times(r.get("rounds_ratio_vs_baseline")),
        ]
        for r in results
    ]
    return _table(BENCH_COLUMNS, rows)


EXECUTION_COLUMNS = (
    "run",
    "execution",
    "delay (steps)",
    "mean max reward ± CI95",
    "success",
    "switch jump mean / p95",
    "within-chunk jump mean / p95",
)


def _jumps(stats: Mapping[str, Any] | None) -> str:
    stats = stats or {}
    return f"{_fmt(stats.get('mean'), 1)} / {_fmt(stats.get('p95'), 1)}"


def execution_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Each run's execution mode and delay (a measured one with its latency), score and the jumps between
    consecutive commanded actions at chunk switches and within chunks (env units)."""
    rows = []
    for r in results:
        delay = str(r.get("delay_steps", 0))
        if r.get("delay_measured_ms") is not None:
            delay += f" (measured {r['delay_measured_ms']:.0f} ms at {_fmt(r.get('control_hz'), 0)} Hz)"
        smooth = r.get("smoothness") or {}
        rows.append(
            [
                str(r.get("label") or r.get("sampler")),
                str(r.get("execution", "sync"))
                + (f" g={r['rtc_guidance']:g}" if r.get("rtc_guidance") else "")
                + (f" s={r['rtc_span']}" if r.get("rtc_span") is not None and r.get("rtc_guidance") else ""),
                delay,
                *_score_cells(r)[1:3],
                _jumps(smooth.get("switch")),
                _jumps(smooth.get("within")),
            ]
        )
    return _table(EXECUTION_COLUMNS, rows)


def per_task_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per sampler: the task-averaged success ± CI95, latency, NFE, rounds, then success per task."""
    order = family_for(results[0]).task_order if results else ()
    seen = [t for r in results for t in (r.get("per_task") or {})]
    tasks = [t for t in order if t in seen] + [t for t in dict.fromkeys(seen) if t not in order]
    head = [
        "sampler",
        "episodes",
        f"success ({len(tasks)}-task mean) ± CI95",
        "chunk p50 / p95 ms",
        "NFE/chunk",
        "rounds/chunk",
        "speed-up latency / rounds",
        *(_SHORT_TASKS.get(t, t) for t in tasks),
    ]
    rows = []
    for r in results:
        lat = r.get("latency_ms") or {}
        ci = r.get("success_ci95")
        per = r.get("per_task") or {}
        rows.append(
            [
                str(r.get("label", r.get("sampler", "?"))),
                str(r.get("n_episodes", "?")),
                f"{r['success_rate']:.3f}" + (f" ± {ci:.3f}" if ci is not None else ""),
                " / ".join("n/a" if lat.get(k) is None else f"{lat[k]:.1f}" for k in ("p50", "p95")),
                "n/a" if r.get("nfe_per_chunk") is None else f"{r['nfe_per_chunk']:.1f}",
                "n/a" if r.get("rounds_per_chunk") is None else f"{r['rounds_per_chunk']:.1f}",
                " / ".join(
                    "n/a" if s is None else f"{s:.2f}x"
                    for s in (r.get("speedup_vs_baseline"), r.get("rounds_ratio_vs_baseline"))
                ),
                *(f"{per[t]['success_rate']:.2f}" if t in per else "-" for t in tasks),
            ]
        )
    return _table(head, rows)


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
    rows = [
        [
            str(c["a"]),
            str(c["b"]),
            str(c["n_seeds"]),
            _signed(c["mean_diff"], c.get("ci95")),
            f"{c['a_better']} / {c['b_better']} / {c['ties']}",
            "yes" if c["a_clearly_better"] else "no",
            _signed(c.get("success_diff"), c.get("success_ci95")),
            _times(c.get("latency_ratio_b_over_a")),
        ]
        for c in comparisons
    ]
    return _table(header, rows)


# ---------------------------------------------------------------- eval report
def _per_task_lines(result: Mapping[str, Any]) -> list[str]:
    """Multi-task results: the per-task success table."""
    if "per_task" not in result:
        return []
    family = family_for(result)
    return [
        f"## Success per task ({family.title})",
        "",
        per_task_table([result]),
        "",
        "Success is the mean over tasks of each task's rate, CI95 by the normal approximation; "
        f"mean max reward above is {family.reward_name}.",
        "",
    ]


def eval_markdown(result: Mapping[str, Any]) -> str:
    """``report.md`` of one evaluation: the table, per-task success, what the numbers mean, the machine."""
    seeds = list(result.get("seeds", []))
    seed_text = f"{seeds[0]} … {seeds[-1]} ({len(seeds)} seeds)" if seeds else "none"
    lines = [
        f"# Evaluation: {result.get('sampler', '?')}",
        "",
        markdown_table([result]),
        "",
        *_per_task_lines(result),
        f"Mean max reward is {family_for(result).reward_name}; CI95 is the normal approximation "
        "(1.96 · std / √n). Chunk latency is one batched policy call that planned a new chunk; "
        "per-action ms is total policy time divided by batched control steps.",
        "",
        f"- environment: {result.get('env_id', '?')} (obs_type {result.get('obs_type', '?')}, "
        f"max {result.get('max_steps', '?')} steps)",
        f"- seeds: {seed_text}",
        f"- episode length mean: {_fmt(result.get('episode_length_mean'), 1)}",
        f"- chunks timed: {(result.get('latency_ms') or {}).get('n_chunks', 'n/a')}, "
        f"hit deadline: {_fmt(result.get('frac_hit_deadline'), 2)}, "
        f"not converged: {_fmt(result.get('frac_not_converged'), 2)}",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in (result.get("machine") or {}).items()],
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- bench report
def disturbance_section(disturbance: Mapping[str, Any] | None) -> list[str]:
    """The warning block at the top of a report whose run was disturbed (what was seen, which samplers'
    figures it touched), or one line saying the machine was quiet; nothing for a report without the field."""
    if not disturbance:
        return []
    quiet = quiet_line(disturbance)
    if quiet:
        return [quiet, ""]
    head, *rest = warning_lines(disturbance)
    return [
        f"> **Warning: {head}.**",
        ">",
        *[f"> - {line}" for line in rest],
        ">",
        "> Rerun on a quiet machine before quoting these latencies; the `disturbance` field of report.json "
        "holds the measurements (docs/benchmarks.md, Benches that flag noise).",
        "",
    ]


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


def _bench_per_task_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    if not any("per_task" in r for r in results):
        return []
    family = family_for(results[0])
    return [
        f"## {family.title} success per task",
        "",
        per_task_table(results),
        "",
        "Success is the mean over tasks of each task's success rate; its CI95 is the normal approximation "
        "(1.96 · sqrt(Σ p(1-p)/n) / tasks). One seed is one episode per task. Mean max reward above is "
        f"{family.reward_name}.",
        "",
    ]


def _execution_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    if all(r.get("execution", "sync") == "sync" for r in results):
        return []
    return [
        "## Execution under latency",
        "",
        execution_table(results),
        "",
        "The world advances `delay` control steps during each planning (simulated clock; sync: the world waits). "
        "Jumps are the L2 distance between consecutive commanded actions in env units, at chunk switches and "
        "within a chunk (docs/benchmarks.md, The robot never waits).",
        "",
    ]


def bench_markdown(report: Mapping[str, Any]) -> str:
    """``report.md``: the table, what the columns mean, calibrations, skips, machine, command."""
    results = report["results"]
    seeds = list(report.get("seeds", []))
    calibrations = [line for r in results if (line := _calibration_line(r))]
    per_task = _bench_per_task_lines(results)
    reward_note = (
        ""
        if per_task
        else f"Mean max reward is {family_for(results[0]).reward_name} with a normal-approximation CI95 "
        "(1.96 · std / √n). "
    )
    lines = [
        "# Sampler benchmark",
        "",
        *disturbance_section(report.get("disturbance")),
        bench_table(results),
        "",
        *_execution_lines(results),
        *per_task,
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


# ---------------------------------------------------------------- files
def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None``: JSON has no NaN/inf, and a
    report of an hour's rollouts must still be written when one ratio is undefined."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _write(report: Mapping[str, Any], markdown: str, output_dir: str | Path) -> tuple[Path, Path]:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def write_report(result: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write an evaluation's ``report.json`` (everything) and ``report.md`` (table + machine) into ``output_dir``."""
    return _write(result, eval_markdown(result), output_dir)


def write_bench_report(report: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write a benchmark's ``report.json`` (everything, raw latencies included) and ``report.md``."""
    return _write(report, bench_markdown(report), output_dir)
