"""``policy-accel eval [key=value ...]``: score a checkpoint + sampler on seeded PushT episodes.

See configs/eval.yaml. Writes ``report.json`` / ``report.md`` into ``output_dir`` and
prints the Markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from policy_accel.cli.env_check import check_policy_fits_env
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


def _sampler_spec(cfg: DictConfig) -> dict[str, Any]:
    """The ``sampler`` config group entry as a plain mapping for ``build_sampler``."""
    return OmegaConf.to_container(cfg.sampler, resolve=True)


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
        },
    )
    device = target_device(cfg, "eval")  # a missing device fails here, before loading anything
    import torch

    from policy_accel.device import device_info
    from policy_accel.eval.report import markdown_table, write_report
    from policy_accel.eval.rollout import evaluate_policy
    from policy_accel.policy.checkpoint import CheckpointError, load_policy

    checkpoint = Path(str(cfg.checkpoint))
    if not checkpoint.exists():  # a file, or a LeRobot pretrained_model/ directory
        raise SystemExit(
            f"policy-accel eval: checkpoint not found: '{checkpoint}' "
            "(pass checkpoint=PATH, or train one with `policy-accel train`)"
        )
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    spec = _sampler_spec(cfg)
    try:
        policy = load_policy(checkpoint, sampler=spec)
    except CheckpointError as exc:
        raise SystemExit(f"policy-accel eval: {exc}") from None
    except (ValueError, TypeError, FileNotFoundError) as exc:  # a bad sampler spec, a missing student file
        raise SystemExit(f"policy-accel eval: bad sampler {spec!r}: {exc}") from None
    place_policy(policy, cfg, "eval")
    from policy_accel.eval.metaworld_rollout import evaluate_metaworld, is_metaworld_env

    check_policy_fits_env(policy, cfg, checkpoint, "eval")

    output_dir = prepare_output_dir(
        Path(str(cfg.output_dir)) if cfg.output_dir else Path("outputs/eval") / policy.sampler.name, "eval"
    )
    seeds = list(range(int(cfg.seed_start), int(cfg.seed_start) + int(cfg.n_seeds)))
    evaluate = evaluate_metaworld if is_metaworld_env(cfg.env) else evaluate_policy
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
    )
    result["checkpoint"] = str(checkpoint)
    result["sampler_spec"] = spec
    result["device"] = device_info(device)
    result["compile"] = policy.compile_mode
    json_path, md_path = write_report(result, output_dir)
    print(markdown_table([result]))
    if "per_task" in result:
        from policy_accel.eval.metaworld_rollout import metaworld_table

        print("\n" + metaworld_table([result]))
    print(f"\nreport: {md_path}\n        {json_path}")
    for video in result["videos"]:
        print(f"video:  {video}")
