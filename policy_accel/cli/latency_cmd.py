"""``policy-accel latency [key=value ...]``: chunk latency beside a competing process, per thread count."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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
)

CONFIG_NAME = "latency"


def run(args: list[str]) -> None:
    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "latency",
        {
            "competitors": positive_int,
            "chunks": positive_int,
            "seed": non_negative_int,
            "device": device_option,
            "compile": compile_option,
        },
    )
    target_device(cfg, "latency")
    counts = OmegaConf.to_container(cfg.thread_counts)
    if not isinstance(counts, list) or not counts or any(positive_int(c) for c in counts):
        raise SystemExit(f"policy-accel latency: thread_counts must be a list of integers >= 1, got {counts!r}")
    out = prepare_output_dir(str(cfg.output_dir), "latency")
    from policy_accel.device import device_info
    from policy_accel.eval.load_test import latency_under_load, load_test_markdown
    from policy_accel.eval.machine import machine_info
    from policy_accel.eval.report import json_safe
    from policy_accel.policy.loading import CheckpointError, load_policy

    try:
        policy = load_policy(Path(str(cfg.checkpoint)), sampler=OmegaConf.to_container(cfg.sampler, resolve=True))
    except (FileNotFoundError, CheckpointError, ValueError) as exc:
        raise SystemExit(f"policy-accel latency: {exc}") from None
    place_policy(policy, cfg, "latency")
    p = policy.config
    stats = policy.normalizer.state_dict()
    low, high = stats.get("fields.obs.min"), stats.get("fields.obs.max")
    rng = np.random.default_rng(int(cfg.seed))
    if low is not None and high is not None:
        obs = rng.uniform(low.cpu().numpy(), high.cpu().numpy(), (1, p.n_obs_steps, p.obs_dim))
    else:
        obs = rng.uniform(-1, 1, (1, p.n_obs_steps, p.obs_dim))
    rows = latency_under_load(
        policy, obs.astype(np.float32), counts, int(cfg.competitors), int(cfg.chunks), float(cfg.budget_s)
    )
    report = {
        "sampler": policy.sampler.name,
        "rows": rows,
        "machine": machine_info(),
        "device": device_info(policy.device),
        "compile": policy.compile_mode,
        "command": "policy-accel latency " + " ".join(args),
    }
    (out / "latency.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    table = load_test_markdown(rows, policy.sampler.name)
    (out / "latency.md").write_text(
        table + f"\n\nmachine: {report['machine']['cpu']}; command: `{report['command']}`\n"
    )
    print(table)
    print(f"\nwritten to {out}/latency.json, latency.md")
