#!/usr/bin/env python3
"""Rounds and network evaluations of Picard samplers per window and variant (issue 23's table).

Solves one chunk per observation with each variant (``iteration:initial_guess``) at each window and prints
a Markdown table of mean rounds (sequential network calls) and NFE per observation, against n / window;
``--json`` also writes the figures. Rounds and NFE are deterministic (fixed noise seeds); ``--timing`` adds
median chunk latencies and the sequential solver's, which are only meaningful on a quiet machine:

    flock /tmp/policy_accel_heavy.lock python scripts/picard_rounds.py --threads 2 --timing

Observations: PushT demonstrations from the replay zarr (``--zarr``; evenly spaced steps, each with its
previous step as history) or, for Meta-World MT10 and wherever the zarr is missing, env resets of seeds
100000... (MT10: cycling through the ten tasks). ``--batch B`` solves B observations per call (per-sample
windows: the batch's rounds are the slowest sample's, reported as ``batch rounds``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ZARR = REPO.parent / "shared" / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"


def pusht_demo_observations(zarr_path: Path, count: int) -> torch.Tensor:
    """(count, 2, 20) keypoint observation histories at evenly spaced steps of the PushT demonstrations."""
    import zarr

    root = zarr.open_group(str(zarr_path), mode="r")
    keypoints, state = root["data/keypoint"][:], root["data/state"][:]
    obs = np.concatenate([keypoints.reshape(len(keypoints), -1), state[:, :2]], -1).astype(np.float32)
    index = np.linspace(1, len(obs) - 1, count).astype(int)
    return torch.as_tensor(np.stack([obs[index - 1], obs[index]], 1))


def reset_observations(policy, env_name: str, count: int) -> torch.Tensor:
    """(count, n_obs_steps, obs_dim) histories of env resets (seeds 100000...), the first frame repeated."""
    import gymnasium as gym

    import policy_accel.envs as envs

    rows = []
    for i in range(count):
        if env_name == "mt10":
            env = gym.make(
                envs.metaworld_env_id(envs.MT10_TASKS[i % len(envs.MT10_TASKS)]), obs_type=policy.config.obs_type
            )
        else:
            env = gym.make(envs.PUSHT_ID, obs_type=policy.config.obs_type)
        obs, _ = env.reset(seed=100000 + i)
        env.close()
        rows.append(torch.as_tensor(obs, dtype=torch.float32).expand(policy.config.n_obs_steps, -1))
    return torch.stack(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "pusht_keypoints_teacher.safetensors"))
    parser.add_argument("--env", choices=["pusht", "mt10"], default=None, help="default: from the checkpoint name")
    parser.add_argument("--source", choices=["demos", "resets"], default="demos", help="PushT observations")
    parser.add_argument("--zarr", type=Path, default=DEFAULT_ZARR)
    parser.add_argument("--observations", type=int, default=20)
    parser.add_argument("--batch", type=int, default=1, help="observations per solve (per-sample windows)")
    parser.add_argument("--sampler", default="paraddpm-100", help="the Picard sampler, e.g. paraddim-16")
    parser.add_argument("--windows", default="8,16,32,64")
    parser.add_argument(
        "--variants",
        default="picard:extrapolate,semilinear:extrapolate,semilinear:student",
        help="comma list of iteration:initial_guess (student: the checkpoint's shipped 1-step student)",
    )
    parser.add_argument("--tolerance", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--timing", action="store_true", help="also time chunks (and the sequential solver)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import policy_accel
    from policy_accel.samplers import build_sampler, parse_sampler_spec
    from policy_accel.samplers.sequential import draw_noise

    policy = policy_accel.load(args.checkpoint).to(args.device)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    env_name = args.env or ("mt10" if "metaworld" in Path(args.checkpoint).name else "pusht")
    if env_name == "pusht" and args.source == "demos" and args.zarr.exists():
        history, source = pusht_demo_observations(args.zarr, args.observations), "PushT demonstrations"
    else:
        history, source = reset_observations(policy, env_name, args.observations), f"{env_name} resets"
    with torch.inference_mode():
        conds = policy.encode_obs(history.to(device))
    spec = parse_sampler_spec(args.sampler)
    n = int(spec.get("num_steps") or 100)
    shape_of = lambda b: (b, policy.config.horizon, policy.config.action_dim)  # noqa: E731
    windows = [int(w) for w in args.windows.split(",")]
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    groups = [list(range(i, min(i + args.batch, len(conds)))) for i in range(0, len(conds), args.batch)]

    def solve(sampler, group, seed):
        shape = shape_of(len(group))
        noise = draw_noise(sampler.solver, shape, torch.Generator().manual_seed(seed), device=device)
        sync()
        start = time.perf_counter()
        out = sampler.sample(policy.denoise, conds[group], shape, noise=noise)
        sync()
        return out, time.perf_counter() - start

    results: dict = {"source": source, "observations": len(conds), "batch": args.batch, "sampler": args.sampler}
    results["steps"], results["threads"], results["rows"] = n, args.threads, []
    if args.timing:
        sequential = build_sampler(args.sampler.replace("para", "", 1))
        times = []
        for g, group in enumerate(groups):
            shape = shape_of(len(group))
            noise = draw_noise(sequential.solver, shape, torch.Generator().manual_seed(1000 + g), device=device)
            if g == 0:
                sequential.sample(policy.denoise, conds[group], shape, noise=noise)  # warm-up
            sync()
            start = time.perf_counter()
            sequential.sample(policy.denoise, conds[group], shape, noise=noise)
            sync()
            times.append(time.perf_counter() - start)
        results["sequential_latency_s"] = statistics.median(times)
    for iteration, guess in variants:
        for window in windows:
            options = {**spec, "window": window, "tolerance": args.tolerance, "iteration": iteration}
            options["initial_guess"] = guess
            policy.set_sampler(options)  # the policy resolves a student guess to its shipped 1-step student
            sampler = policy.sampler
            if args.timing:
                solve(sampler, groups[0], 0)  # warm-up
            sample_rounds, nfe, batch_rounds, latency = [], [], [], []
            for g, group in enumerate(groups):
                out, seconds = solve(sampler, group, 1000 + g)
                sample_rounds += out.stats.extra["sample_rounds"]
                nfe.append(out.stats.extra["network_rows"] / len(group))
                batch_rounds.append(out.stats.rounds)
                latency.append(seconds)
            row = {
                "iteration": iteration,
                "initial_guess": guess,
                "window": window,
                "n_over_window": n / window,
                "rounds": statistics.mean(sample_rounds),
                "batch_rounds": statistics.mean(batch_rounds),
                "nfe": statistics.mean(nfe),
            }
            if args.timing:
                row["latency_s"] = statistics.median(latency)
                row["speedup"] = results["sequential_latency_s"] / row["latency_s"]
            results["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    policy.set_sampler("ddpm")
    print(markdown(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return results


def markdown(results: dict) -> str:
    timing = "sequential_latency_s" in results
    lines = [
        f"{results['sampler']}, {results['observations']} {results['source']}, batch {results['batch']}, "
        f"{results['threads']} thread(s)"
        + (f"; sequential chunk {1000 * results['sequential_latency_s']:.1f} ms" if timing else ""),
        "",
        "| iteration | guess | window | n / window | rounds | batch rounds | NFE |"
        + (" chunk ms | speedup |" if timing else ""),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if timing else ""),
    ]
    for r in results["rows"]:
        line = (
            f"| {r['iteration']} | {r['initial_guess']} | {r['window']} | {r['n_over_window']:.1f} | "
            f"{r['rounds']:.2f} | {r['batch_rounds']:.2f} | {r['nfe']:.1f} |"
        )
        if timing:
            line += f" {1000 * r['latency_s']:.1f} | {r['speedup']:.2f}x |"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
