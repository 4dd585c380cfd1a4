"""``policy-accel eval [key=value ...]``: score a checkpoint + sampler on seeded PushT episodes.

See configs/eval.yaml. Writes ``report.json`` / ``report.md`` into ``output_dir`` and
prints the Markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from policy_accel.cli.env_check import check_policy_fits_env
from policy_accel.cli.execution_options import EVAL_EXECUTION_CHECKS, check_execution_fits, execution_kwargs
from policy_accel.cli.executor_options import EXECUTOR_CHECKS, check_executor_use, executor_evaluate
from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import (
    boolean,
    check_options,
    compile_option,
    device_option,
    non_negative_int,
    place_policy,
    positive_int,
    prepare_output_dir,
    target_device,
    threads,
)

CONFIG_NAME = "eval"


def _sampler_spec(cfg: DictConfig, args: list[str], checkpoint: Path) -> dict[str, Any]:
    """The ``sampler`` config group entry as a plain mapping for ``build_sampler``; ``sampler=student-k``
    without ``sampler.checkpoint=`` means the k-step student of the checkpoint in use."""
    spec = OmegaConf.to_container(cfg.sampler, resolve=True)
    given = any(arg.lstrip("+").startswith("sampler.checkpoint=") for arg in args)
    if spec.get("name") == "student" and not given:
        spec["checkpoint"] = str(_student_of(checkpoint, int(spec["num_steps"])))
    return spec


def _student_of(checkpoint: Path, num_steps: int) -> Path:
    """``<prefix>_teacher.safetensors`` -> ``<prefix>_student_<k>step.safetensors`` beside it (how distilled
    students are shipped, e.g. checkpoints/metaworld_mt10_student_1step.safetensors); an error naming
    ``sampler.checkpoint`` when the checkpoint has no such name or that student is not there."""
    stem = checkpoint.name.rsplit(".", 1)[0]
    if not checkpoint.is_file() or not stem.endswith("_teacher"):
        raise SystemExit(
            f"policy-accel eval: sampler=student-{num_steps}: no students are known for checkpoint '{checkpoint}' "
            "(students are found beside a <name>_teacher.safetensors as <name>_student_<k>step.safetensors); "
            "pass sampler.checkpoint=PATH to a student distilled from it"
        )
    student = checkpoint.with_name(f"{stem.removesuffix('_teacher')}_student_{num_steps}step.safetensors")
    if not student.is_file():
        raise SystemExit(
            f"policy-accel eval: sampler=student-{num_steps}: the student '{student}' not found beside "
            f"checkpoint '{checkpoint}'; distill it with `policy-accel distill` or pass sampler.checkpoint=PATH"
        )
    return student


def run(args: list[str]) -> None:
    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "eval",
        {
            "n_seeds": positive_int,
            "seed_start": non_negative_int,
            "n_envs": positive_int,
            "max_steps": positive_int,
            "threads": threads,
            "warm_start": boolean,
            "videos": non_negative_int,
            "device": device_option,
            "compile": compile_option,
            **EXECUTOR_CHECKS,
            **EVAL_EXECUTION_CHECKS,
        },
    )
    check_executor_use(cfg, "eval")
    device = target_device(cfg, "eval")  # a missing device fails here, before loading anything
    import torch

    from policy_accel.device import device_info
    from policy_accel.eval.report import markdown_table, per_task_table, write_report
    from policy_accel.eval.rollout import evaluate_policy
    from policy_accel.eval.sweep import append_executor_section
    from policy_accel.policy.loading import CheckpointError, load_policy

    checkpoint = Path(str(cfg.checkpoint))
    if not checkpoint.exists():  # a file, or a LeRobot pretrained_model/ directory
        raise SystemExit(
            f"policy-accel eval: checkpoint not found: '{checkpoint}' "
            "(pass checkpoint=PATH, or train one with `policy-accel train`)"
        )
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    spec = _sampler_spec(cfg, args, checkpoint)
    try:
        policy = load_policy(checkpoint, sampler=spec)
    except CheckpointError as exc:
        raise SystemExit(f"policy-accel eval: {exc}") from None
    except (ValueError, TypeError, FileNotFoundError) as exc:  # a bad sampler spec, a missing student file
        raise SystemExit(f"policy-accel eval: bad sampler {spec!r}: {exc}") from None
    place_policy(policy, cfg, "eval")
    check_policy_fits_env(policy, cfg, checkpoint, "eval")
    check_execution_fits(cfg, policy, "eval")

    output_dir = prepare_output_dir(
        Path(str(cfg.output_dir)) if cfg.output_dir else Path("outputs/eval") / policy.sampler.name, "eval"
    )
    seeds = list(range(int(cfg.seed_start), int(cfg.seed_start) + int(cfg.n_seeds)))
    evaluate = evaluate_policy if cfg.executor is None else executor_evaluate(cfg, checkpoint, spec, output_dir)
    result = evaluate(
        policy,
        sampler=None,
        env_cfg=cfg.env,
        seeds=seeds,
        n_envs=int(cfg.n_envs),
        progress=True,
        max_steps=int(cfg.max_steps),
        record_video_episodes=int(cfg.videos),
        video_dir=output_dir / "videos",
        warm_start=bool(cfg.warm_start),
        **execution_kwargs(cfg),
    )
    result["checkpoint"] = str(checkpoint)
    result["sampler_spec"] = spec
    result["device"] = device_info(device)
    result["compile"] = policy.compile_mode
    json_path, md_path = write_report(result, output_dir)
    if cfg.executor is not None:
        append_executor_section(md_path, result["executor"])
    print(markdown_table([result]))
    if "per_task" in result:
        print("\n" + per_task_table([result]))
    print(f"\nreport: {md_path}\n        {json_path}")
    for video in result["videos"]:
        print(f"video:  {video}")
