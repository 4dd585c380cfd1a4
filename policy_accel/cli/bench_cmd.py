"""``policy-accel bench [key=value ...]``: latency/reward benchmark of every sampler.

See configs/bench.yaml. Writes ``report.json``, ``report.md``, ``reward_vs_latency.png``
and ``latency_distributions.png`` into ``output_dir`` and prints the table.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import OmegaConf

from policy_accel.cli.env_check import check_policy_fits_env
from policy_accel.cli.execution_options import BENCH_EXECUTION_CHECKS
from policy_accel.cli.executor_options import EXECUTOR_CHECKS, check_executor_use, executor_benchmark
from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import (
    check_options,
    compile_option,
    device_option,
    non_negative_int,
    positive_int,
    prepare_output_dir,
    target_device,
    threads,
)

CONFIG_NAME = "bench"


def run(args: list[str]) -> None:
    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "bench",
        {
            "n_seeds": positive_int,
            "seed_start": non_negative_int,
            "n_envs": positive_int,
            "max_steps": positive_int,
            "threads": threads,
            "device": device_option,
            "compile": compile_option,
            "latency_seeds": positive_int,
            **EXECUTOR_CHECKS,
            **BENCH_EXECUTION_CHECKS,
        },
    )
    check_executor_use(cfg, "bench")
    device = target_device(cfg, "bench")
    output_dir = prepare_output_dir(Path(str(cfg.output_dir)), "bench")
    import torch

    from policy_accel.eval.bench import BenchSpecError, run_benchmark
    from policy_accel.eval.plots import plot_latency_distributions, plot_reward_vs_latency
    from policy_accel.eval.report import bench_table, comparison_table, per_task_table, write_bench_report
    from policy_accel.eval.sweep import append_executor_section
    from policy_accel.policy.loading import CheckpointError, load_policy

    checkpoint = Path(str(cfg.checkpoint))
    if not checkpoint.exists():  # a file, or a LeRobot pretrained_model/ directory
        raise SystemExit(
            f"policy-accel bench: checkpoint not found: '{checkpoint}' "
            "(pass checkpoint=PATH, or train one with `policy-accel train`)"
        )
    samplers = OmegaConf.to_container(cfg.samplers, resolve=True)
    if not isinstance(samplers, list) or not samplers:
        raise SystemExit(f"policy-accel bench: samplers must be a non-empty list, got {samplers!r}")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        policy = load_policy(checkpoint)
    except CheckpointError as exc:
        raise SystemExit(f"policy-accel bench: {exc}") from None
    policy.to(device)
    check_policy_fits_env(policy, cfg, checkpoint, "bench")

    seeds = list(range(int(cfg.seed_start), int(cfg.seed_start) + int(cfg.n_seeds)))
    try:
        benchmark = run_benchmark if cfg.executor is None else executor_benchmark(cfg, output_dir)
        report = benchmark(
            policy,
            samplers,
            cfg.env,
            seeds,
            n_envs=int(cfg.n_envs),
            max_steps=int(cfg.max_steps),
            progress=True,
            checkpoint=str(checkpoint),
            compare=[] if cfg.compare is None else OmegaConf.to_container(cfg.compare, resolve=True),
            compile=cfg.compile,
            execution=OmegaConf.to_container(cfg.execution) if OmegaConf.is_config(cfg.execution) else cfg.execution,
            delay=OmegaConf.to_container(cfg.delay) if OmegaConf.is_config(cfg.delay) else cfg.delay,
            rtc_guidance=float(cfg.rtc_guidance),
            rtc_span=None if cfg.rtc_span is None else int(cfg.rtc_span),
        )
    except BenchSpecError as exc:  # a bad sampler entry, or a student file that does not fit
        raise SystemExit(f"policy-accel bench: {exc}") from None
    report["command"] = shlex.join(["policy-accel", "bench", *args])
    report["config"] = OmegaConf.to_container(cfg, resolve=True)

    json_path, md_path = write_bench_report(report, output_dir)
    if cfg.executor is not None:
        append_executor_section(md_path, report["executor"])
    scatter = plot_reward_vs_latency(report["results"], output_dir / "reward_vs_latency.png")
    boxes = plot_latency_distributions(report["results"], output_dir / "latency_distributions.png")
    if any(r.get("execution", "sync") != "sync" for r in report["results"]):
        from policy_accel.eval.plots import plot_reward_vs_delay

        print(f"plot:   {plot_reward_vs_delay(report['results'], output_dir / 'reward_vs_delay.png')}")
    print(bench_table(report["results"]))
    if any("per_task" in r for r in report["results"]):
        print("\n" + per_task_table(report["results"]))
    if report["comparisons"]:
        print("\n" + comparison_table(report["comparisons"]))
    print(f"\nreport: {md_path}\n        {json_path}\nplots:  {scatter}\n        {boxes}")
    disturbance = report.get("disturbance") or {}
    if disturbance.get("verdict", "quiet") != "quiet":  # the last word, where the table's reader looks
        named = ", ".join(disturbance.get("affected") or []) or "no sampler in particular"
        print(
            f"\nWARNING: this run was {disturbance['verdict']}; affected: {named}. Its latencies may be the "
            "machine's, not the samplers' (report.md says why)"
        )
