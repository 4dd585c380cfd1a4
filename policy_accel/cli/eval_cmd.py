"""``policy-accel eval [key=value ...]``: score a checkpoint + sampler on seeded PushT episodes.

See configs/eval.yaml. Writes ``report.json`` / ``report.md`` into ``output_dir`` and
prints the Markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import boolean, check_options, non_negative_int, positive_int, prepare_output_dir, threads

CONFIG_NAME = "eval"


def _sampler_spec(cfg: DictConfig) -> dict[str, Any]:
    """The ``sampler`` config group entry as a plain mapping for ``build_sampler``."""
    return OmegaConf.to_container(cfg.sampler, resolve=True)


def run(args: list[str]) -> None:
    cfg = load_config(CONFIG_NAME, args)
    check_options(cfg, "eval", {"n_seeds": positive_int, "seed_start": non_negative_int, "n_envs": positive_int,
                                "max_steps": positive_int, "threads": threads, "warm_start": boolean,
                                "videos": non_negative_int})
    import torch

    from policy_accel.eval.report import markdown_table, write_report
    from policy_accel.eval.rollout import evaluate_policy
    from policy_accel.policy.checkpoint import CheckpointError, load_policy

    checkpoint = Path(str(cfg.checkpoint))
    if not checkpoint.is_file():
        raise SystemExit(f"policy-accel eval: checkpoint not found: '{checkpoint}' "
                         "(pass checkpoint=PATH, or train one with `policy-accel train`)")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    spec = _sampler_spec(cfg)
    try:
        policy = load_policy(checkpoint, sampler=spec)
    except CheckpointError as exc:
        raise SystemExit(f"policy-accel eval: {exc}") from None
    except (ValueError, TypeError, FileNotFoundError) as exc:  # a bad sampler spec, a missing student file
        raise SystemExit(f"policy-accel eval: bad sampler {spec!r}: {exc}") from None
    if policy.config.obs_type != cfg.env.obs_type:
        raise SystemExit(f"policy-accel eval: '{checkpoint}' was trained on obs_type "
                         f"'{policy.config.obs_type}' but env gives '{cfg.env.obs_type}'; "
                         f"pass env=pusht_{policy.config.obs_type}")

    output_dir = prepare_output_dir(Path(str(cfg.output_dir)) if cfg.output_dir
                                    else Path("outputs/eval") / policy.sampler.name, "eval")
    seeds = list(range(int(cfg.seed_start), int(cfg.seed_start) + int(cfg.n_seeds)))
    result = evaluate_policy(policy, sampler=None, env_cfg=cfg.env, seeds=seeds, n_envs=int(cfg.n_envs),
                             progress=True, max_steps=int(cfg.max_steps), record_video_episodes=int(cfg.videos),
                             video_dir=output_dir / "videos", warm_start=bool(cfg.warm_start))
    result["checkpoint"] = str(checkpoint)
    result["sampler_spec"] = spec
    json_path, md_path = write_report(result, output_dir)
    print(markdown_table([result]))
    print(f"\nreport: {md_path}\n        {json_path}")
    for video in result["videos"]:
        print(f"video:  {video}")
