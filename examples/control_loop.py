"""A 10 Hz PushT control loop with an accelerated Diffusion Policy.

    python examples/control_loop.py --sampler picard --window auto --deadline-ms 60
    python examples/control_loop.py --steps 10000 --no-sleep     # memory soak, as fast as possible
    python examples/control_loop.py --sampler ddpm --realtime rtc  # the robot never waits: RealTimePolicy

Each tick: read the observation, ask the policy for one action (a new chunk is planned
every 8 ticks), step the simulator, sleep until the next tick. Prints per-action
latency, ticks that overran the 100 ms period, deadline hits, and the process's
resident memory at the start and end, so growth over a long run is visible.

``--realtime rtc|async|blend`` runs the loop through :class:`policy_accel.RealTimePolicy`: chunks are
planned in a background thread while the current one executes (real-time chunking with ``rtc``), so no tick
waits on the network after the first; it prints the runtime's delays, late chunks and underruns.
"""

from __future__ import annotations

import argparse
import resource
import time

import gymnasium as gym
import numpy as np

import policy_accel  # importing it registers the gymnasium ids


def rss_mb() -> float:
    """Current resident set size of this process in MB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="checkpoints/pusht_keypoints_teacher.safetensors")
    parser.add_argument("--sampler", default="picard", help="ddpm, ddim-10, picard, paraddim-16, student, ...")
    parser.add_argument("--window", default=None, help="Picard window: an integer or auto")
    parser.add_argument("--tolerance", type=float, default=None)
    parser.add_argument("--deadline-ms", type=float, default=None, help="Picard time budget per chunk")
    parser.add_argument("--student", default=None, help="student checkpoint, with --sampler student")
    parser.add_argument("--warm-start", action="store_true")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads while planning; 1 keeps latency steady beside other processes",
    )
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=100000)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--no-sleep", action="store_true", help="run ticks back to back (soak tests)")
    parser.add_argument("--realtime", choices=["rtc", "async", "blend"], default=None, help="plan in a thread")
    parser.add_argument("--delay", default="auto", help="--realtime: delay in ticks, or auto (measured)")
    args = parser.parse_args()

    options = {}
    if args.window is not None:
        options["window"] = args.window if args.window == "auto" else int(args.window)
    if args.tolerance is not None:
        options["tolerance"] = args.tolerance
    if args.deadline_ms is not None:
        options["deadline_s"] = args.deadline_ms / 1000
    if args.student is not None:
        options["checkpoint"] = args.student
    policy = policy_accel.load(
        args.checkpoint, sampler=args.sampler, warm_start=args.warm_start, threads=args.threads, **options
    )
    policy.warmup()  # calibrate (or reuse) the Picard window and warm the kernels before the first tick
    env = gym.make("policy_accel/PushT-v0", obs_type=policy.config.obs_type, max_episode_steps=300)

    period = 1.0 / args.hz
    obs, _ = env.reset(seed=args.seed)
    policy.reset(seed=args.seed)
    policy.select_action(obs)  # warm-up (and auto-window calibration) outside the timed loop
    obs, _ = env.reset(seed=args.seed)
    policy.reset(seed=args.seed)
    runtime = None
    if args.realtime is not None:  # select_action from now on comes from the current chunk, never the network
        delay = args.delay if args.delay == "auto" else int(args.delay)
        runtime = policy_accel.RealTimePolicy(policy, control_hz=args.hz, strategy=args.realtime, delay=delay)
        runtime.reset(seed=args.seed)
    actor = runtime if runtime is not None else policy

    latencies, overruns, deadline_hits, chunks, episode, best = [], 0, 0, 0, 0, 0.0
    start_rss = rss_mb()
    next_tick = time.perf_counter()
    for tick in range(args.steps):
        stats_before = policy.last_stats
        began = time.perf_counter()
        action = actor.select_action(obs)
        latency = time.perf_counter() - began
        latencies.append(latency)
        if policy.last_stats is not stats_before:
            chunks += 1
            deadline_hits += int(policy.last_stats.hit_deadline)
        obs, reward, terminated, truncated, _ = env.step(action)
        best = max(best, float(reward))
        if terminated or truncated:
            print(f"episode {episode}: max reward {best:.3f} after {tick + 1} ticks")
            episode, best = episode + 1, 0.0
            obs, _ = env.reset(seed=args.seed + episode)
            actor.reset(seed=args.seed + episode)
        if latency > period:
            overruns += 1
        next_tick += period
        if not args.no_sleep:
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        if (tick + 1) % 100 == 0:
            recent = np.array(latencies[-100:]) * 1000
            print(
                f"tick {tick + 1}: per-action latency p50 {np.percentile(recent, 50):.1f} ms, "
                f"max {recent.max():.1f} ms, overruns {overruns}, deadline hits {deadline_hits}/{chunks}, "
                f"rss {rss_mb():.1f} MB"
            )
    if runtime is not None:
        runtime.close()
        stats = runtime.stats
        print(
            f"real-time {stats['strategy']}: {stats['chunks']} chunks, delays used {stats['delays_used']}, "
            f"late chunks {stats['late_chunks']}, underruns {stats['underruns']}, planning p50 "
            f"{stats['planning_latency_ms']['p50']:.0f} ms, select_action p99 {stats['select_action_ms']['p99']:.3f} ms"
        )
    ms = np.array(latencies[1:] if runtime is not None else latencies) * 1000
    print(
        f"\n{args.steps} ticks at {args.hz:g} Hz with {policy.sampler.name}: per-action latency "
        f"p50 {np.percentile(ms, 50):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, max {ms.max():.2f} ms; "
        f"ticks over the {period * 1000:.0f} ms period: {overruns}; chunks {chunks}, deadline hits {deadline_hits}; "
        f"rss {start_rss:.1f} -> {rss_mb():.1f} MB"
    )


if __name__ == "__main__":
    main()
