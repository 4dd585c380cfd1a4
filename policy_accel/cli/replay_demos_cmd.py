"""``policy-accel replay-demos PATH``: replay the human demos open loop to check simulator fidelity."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from policy_accel.eval.families import PUSHT
from policy_accel.eval.families.pusht_replay import ORDERS, format_report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policy-accel replay-demos",
        description="Restore each demo's first state, apply its recorded actions and report how far "
        "the block drifts from the record (pixels).",
    )
    parser.add_argument("path", type=Path, help="the replay buffer, e.g. pusht_cchi_v7_replay.zarr")
    parser.add_argument("--episodes", type=int, default=None, metavar="N", help="replay the first N episodes only")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the report as JSON")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="angle-first",
        help="how the block pose is restored: angle-first (correct) or position-first "
        "(Diffusion Policy's legacy reset order, shifts the block)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run(args: list[str]) -> None:
    options = _parser().parse_args(args)
    if options.episodes is not None and options.episodes < 1:
        raise SystemExit(f"policy-accel replay-demos: --episodes must be >= 1, got {options.episodes}")
    from policy_accel.data.replay_buffer import ReplayBufferError

    try:
        report = PUSHT.replay_demos(
            options.path, episodes=options.episodes, order=options.order, progress=not options.no_progress
        )
    except (FileNotFoundError, ReplayBufferError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise SystemExit(f"policy-accel replay-demos: {message}") from None
    print(format_report(report))
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {options.json}")
