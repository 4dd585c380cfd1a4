"""Turn evaluation results into ``report.json`` + ``report.md``, and compare samplers side by side.

Results are the dicts returned by :func:`policy_accel.eval.rollout.evaluate_policy`; the
JSON keeps everything (per-episode scores, raw latencies summary, machine facts) so a
later benchmark can re-tabulate without re-running, and the Markdown is what a human reads.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

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


def machine_info() -> dict[str, Any]:
    """Facts that make a latency number interpretable: CPU, core and thread counts, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _row(result: Mapping[str, Any]) -> list[str]:
    lat = result.get("latency_ms") or {}
    ci = result.get("ci95")
    reward = _fmt(result.get("mean_max_reward")) + (f" ± {_fmt(ci)}" if ci is not None else "")
    latency = " / ".join(_fmt(lat.get(k), 1) for k in ("p50", "p95", "p99"))
    return [
        str(result.get("sampler", "?")),
        str(result.get("n_episodes", "?")),
        reward,
        _fmt(result.get("success_rate"), 2),
        latency,
        _fmt(result.get("per_action_ms"), 2),
        _fmt(result.get("nfe_per_chunk"), 1),
        _fmt(result.get("rounds_per_chunk"), 1),
        _fmt(result.get("batch_size")),
    ]


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """One row per result (sampler), in the given order."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    return "\n".join(lines)


def _machine_lines(machine: Mapping[str, Any]) -> list[str]:
    return [f"- {key}: {value}" for key, value in machine.items()]


def _markdown_report(result: Mapping[str, Any]) -> str:
    seeds = list(result.get("seeds", []))
    seed_text = f"{seeds[0]} … {seeds[-1]} ({len(seeds)} seeds)" if seeds else "none"
    lines = [
        f"# Evaluation: {result.get('sampler', '?')}",
        "",
        markdown_table([result]),
        "",
        *_per_task_lines(result),
        (
            "Mean max reward is Meta-World's dense reward (0-10)"
            if result.get("per_task")
            else "Mean max reward is Diffusion Policy's coverage score"
        )
        + "; CI95 is the normal approximation "
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
        *_machine_lines(result.get("machine") or {}),
        "",
    ]
    return "\n".join(lines)


def _per_task_lines(result: Mapping[str, Any]) -> list[str]:
    """Meta-World results: the per-task success table (imported lazily: PushT reports need no Meta-World)."""
    if "per_task" not in result:
        return []
    from policy_accel.eval.metaworld_rollout import metaworld_table

    return [
        "## Success per task (Meta-World)",
        "",
        metaworld_table([result]),
        "",
        "Success is the mean over tasks of each task's rate, CI95 by the normal approximation; "
        "mean max reward above is Meta-World's dense reward (0-10).",
        "",
    ]


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


def write_report(result: Mapping[str, Any], output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` (everything) and ``report.md`` (table + machine) into ``output_dir``."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "report.json", output_dir / "report.md"
    json_path.write_text(json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(_markdown_report(result), encoding="utf-8")
    return json_path, md_path
