"""``policy-accel profile [key=value ...]``: network vs bookkeeping time per sampler (configs/profile.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import check_options, non_negative_int, positive_int, prepare_output_dir, threads

CONFIG_NAME = "profile"


def run(args: list[str]) -> None:
    import torch

    from policy_accel.data.datasets import PushTDataset
    from policy_accel.eval.profiling import profile_markdown, profile_samplers
    from policy_accel.policy.checkpoint import CheckpointError, load_policy

    cfg = load_config(CONFIG_NAME, args)
    check_options(cfg, "profile", {"n_conds": positive_int, "repeats": positive_int, "seed": non_negative_int,
                                   "threads": threads})
    out = prepare_output_dir(Path(str(cfg.output_dir)), "profile")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        policy = load_policy(Path(str(cfg.checkpoint)))
    except (FileNotFoundError, CheckpointError) as exc:
        raise SystemExit(f"policy-accel profile: {exc}") from None
    p = policy.config
    dataset = PushTDataset(cfg.zarr_path, obs_type=p.obs_type, horizon=p.horizon, n_obs_steps=p.n_obs_steps,
                           n_action_steps=p.n_action_steps, val_ratio=0.0)
    picks = np.random.default_rng(int(cfg.seed)).choice(len(dataset), int(cfg.n_conds), replace=False)
    conds = [policy.normalizer.normalize("obs", dataset[int(i)]["obs"][: p.n_obs_steps][None]).flatten(1)
             for i in picks]
    samplers = OmegaConf.to_container(cfg.samplers, resolve=True)
    report = profile_samplers(policy, samplers, conds, repeats=int(cfg.repeats))
    report["command"] = "policy-accel profile " + " ".join(args)
    (out / "profile.json").write_text(json.dumps(report, indent=2))
    table = profile_markdown(report)
    (out / "profile.md").write_text(f"{table}\n\nthreads: {report['threads']}, command: `{report['command']}`\n")
    print(table)
    print(f"\nthreads: {report['threads']}; written to {out}/profile.json, profile.md")
