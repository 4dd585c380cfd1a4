"""``policy-accel profile [key=value ...]``: network vs bookkeeping time per sampler (configs/profile.yaml)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

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
    threads,
)

CONFIG_NAME = "profile"


def run(args: list[str]) -> None:
    import torch

    from policy_accel.eval.families import family_of_policy
    from policy_accel.eval.profiling import profile_markdown, profile_samplers
    from policy_accel.policy.loading import CheckpointError, load_policy

    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "profile",
        {
            "n_conds": positive_int,
            "repeats": positive_int,
            "seed": non_negative_int,
            "threads": threads,
            "device": device_option,
            "compile": compile_option,
        },
    )
    target_device(cfg, "profile")  # a missing device fails before any work
    out = prepare_output_dir(Path(str(cfg.output_dir)), "profile")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        policy = load_policy(Path(str(cfg.checkpoint)))
    except (FileNotFoundError, CheckpointError) as exc:
        raise SystemExit(f"policy-accel profile: {exc}") from None
    place_policy(policy, cfg, "profile")
    p = policy.config
    dataset = family_of_policy(p).dataset(  # the policy's family's demos (Meta-World: the record-demos zarr)
        cfg.zarr_path,
        obs_type=p.obs_type,
        horizon=p.horizon,
        n_obs_steps=p.n_obs_steps,
        n_action_steps=p.n_action_steps,
        val_ratio=0.0,
    )
    picks = np.random.default_rng(int(cfg.seed)).choice(len(dataset), int(cfg.n_conds), replace=False)
    obs_keys = OmegaConf.to_container(cfg.obs_keys, resolve=True) if cfg.obs_keys is not None else {}
    histories = [_history(dataset[int(i)]["obs"], p, obs_keys) for i in picks]
    with torch.inference_mode():
        conds = [policy.encode_obs(history) for history in histories]
        encode_ms = _encode_ms(policy, histories[0], int(cfg.repeats))
    samplers = OmegaConf.to_container(cfg.samplers, resolve=True)
    report = profile_samplers(policy, samplers, conds, repeats=int(cfg.repeats))
    report["encode_ms"] = encode_ms  # once per chunk, whatever the sampler
    if cfg.predict is not None:
        report["prediction"] = predict_latency(
            report["call_cost_ms"], encode_ms, **OmegaConf.to_container(cfg.predict, resolve=True)
        )
    report["command"] = "policy-accel profile " + " ".join(args)
    (out / "profile.json").write_text(json.dumps(report, indent=2))
    table = profile_markdown(report)
    extra = f"observation encoding: {encode_ms:.2f} ms per chunk\n"
    if "prediction" in report:
        extra += prediction_line(report["prediction"]) + "\n"
    (out / "profile.md").write_text(
        f"{table}\n\n{extra}\nthreads: {report['threads']}, command: `{report['command']}`\n"
    )
    print(table)
    print(f"\nobservation encoding: {encode_ms:.2f} ms per chunk (once per chunk, every sampler)")
    if "prediction" in report:
        print(prediction_line(report["prediction"]))
    print(f"\nthreads: {report['threads']}; written to {out}/profile.json, profile.md")


def _history(obs: Any, config: Any, obs_keys: dict[str, str]) -> Any:
    """One demo window's observation history, batch 1, under the policy's key names."""
    n = config.n_obs_steps
    if not config.dict_obs:
        return obs[:n][None]
    missing = [k for k in config.obs_shapes if obs_keys.get(k, k) not in obs]
    if missing:
        raise SystemExit(
            f"policy-accel profile: the demos have no key for policy keys {missing} (demo keys "
            f"{list(obs)}); set obs_keys, e.g. obs_keys={{image: pixels, agent_pos: agent_pos}}"
        )
    return {k: obs[obs_keys.get(k, k)][:n][None] for k in config.obs_shapes}


def _encode_ms(policy: Any, history: Any, repeats: int) -> float:
    """Best-of time of turning one history into the samplers' conditioning (the image encoder for image policies)."""
    times = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        policy.encode_obs(history)
        times.append(time.perf_counter() - start)
    return 1e3 * min(times)


def predict_latency(
    curve: dict[int, float], encode_ms: float, steps: int, rounds: float, window: int
) -> dict[str, float]:
    """Chunk latency from the batch-cost curve: ``steps`` calls of 1 row (sequential) against ``rounds``
    calls of ``window`` rows (Picard, rounds measured elsewhere), plus one observation encoding each."""
    if window not in curve or 1 not in curve:
        raise SystemExit(f"policy-accel profile: predict.window {window} is not on the cost curve {sorted(curve)}")
    sequential = steps * curve[1] + encode_ms
    picard = rounds * curve[window] + encode_ms
    return {
        "steps": steps,
        "rounds": rounds,
        "window": window,
        "sequential_ms": sequential,
        "picard_ms": picard,
        "speedup": sequential / picard,
    }


def prediction_line(prediction: dict[str, float]) -> str:
    p = prediction
    return (
        f"predicted chunk latency: sequential {p['steps']} x 1 row = {p['sequential_ms']:.1f} ms, Picard "
        f"{p['rounds']} rounds x {p['window']} rows = {p['picard_ms']:.1f} ms -> {p['speedup']:.2f}x"
    )
