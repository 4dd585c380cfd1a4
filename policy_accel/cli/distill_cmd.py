"""``policy-accel distill [key=value ...]``: progressive distillation, see configs/distill.yaml and configs/per_env/distill/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import (
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

CONFIG_NAME = "distill"


def run(args: list[str]) -> None:
    import torch

    from policy_accel.distill.progressive import distill
    from policy_accel.eval.families import check_policy, family_for
    from policy_accel.eval.rollout import evaluate_policy
    from policy_accel.policy.loading import CheckpointError, load_policy
    from policy_accel.samplers.student import StudentSampler

    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "distill",
        {
            "start_steps": positive_int,
            "final_steps": positive_int,
            "iterations": positive_int,
            "batch_size": positive_int,
            "ckpt_every": positive_int,
            "log_every": positive_int,
            "seed": non_negative_int,
            "threads": threads,
            "eval.n_seeds": non_negative_int,
            "eval.seed_start": non_negative_int,
            "eval.n_envs": positive_int,
            "device": device_option,
            "compile": compile_option,
        },
    )
    target_device(cfg, "distill")
    prepare_output_dir(str(cfg.run_dir), "distill", what="run_dir")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        teacher = load_policy(Path(str(cfg.teacher)))
    except (FileNotFoundError, CheckpointError) as exc:
        raise SystemExit(f"policy-accel distill: {exc}") from None
    place_policy(teacher, cfg, "distill")  # the students train on this device; compile applies to their scores
    p = teacher.config
    seeds = list(range(int(cfg.eval.seed_start), int(cfg.eval.seed_start) + int(cfg.eval.n_seeds)))
    # The env only serves the students' rollouts: its observations are checked in detail when there are some.
    if (problem := check_policy(p, cfg.env, cfg.teacher, observations=bool(seeds))) is not None:
        raise SystemExit(f"policy-accel distill: teacher {problem}")
    dataset = family_for(cfg.env).dataset(  # Meta-World: the record-demos zarr, all its tasks (a multi-task teacher)
        cfg.dataset.zarr_path,
        obs_type=p.obs_type,
        horizon=p.horizon,
        n_obs_steps=p.n_obs_steps,
        n_action_steps=p.n_action_steps,
        val_ratio=cfg.dataset.val_ratio,
        seed=cfg.dataset.seed,
    )

    def evaluate(student: StudentSampler) -> dict[str, Any]:
        result = evaluate_policy(  # Meta-World: every task on every seed
            teacher, sampler=student, env_cfg=cfg.env, seeds=seeds, n_envs=int(cfg.eval.n_envs), progress=False
        )
        return {
            "mean_max_reward": result["mean_max_reward"],
            "success_rate": result["success_rate"],
            "eval_seeds": len(seeds),
        }

    def optional(value: Any) -> Any:  # null, a scalar or a mapping such as student_unet
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value

    options = dict(
        start_steps=int(cfg.start_steps),
        final_steps=int(cfg.final_steps),
        iterations=int(cfg.iterations),
        first_round_iterations=optional(cfg.first_round_iterations),
        batch_size=int(cfg.batch_size),
        lr=float(cfg.lr),
        first_round_lr=optional(cfg.first_round_lr),
        ckpt_every=int(cfg.ckpt_every),
        log_every=int(cfg.log_every),
        seed=int(cfg.seed),
        student_unet=optional(cfg.student_unet),
        start_from=optional(cfg.start_from),
    )
    try:
        paths = distill(
            teacher,
            dataset,
            cfg.run_dir,
            evaluate=evaluate if seeds else None,
            recipe={
                "command": "policy-accel distill " + " ".join(args),
                "config": OmegaConf.to_container(cfg, resolve=True),
            },
            **options,
        )
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        raise SystemExit(f"policy-accel distill: {exc}") from None
    for path in paths:
        print(f"student: {path}")
