"""``policy-accel train [key=value ...]``: train (or resume) a teacher, see configs/train.yaml."""

from __future__ import annotations

from policy_accel.cli.hydra_config import load_config


def run(args: list[str]) -> None:
    from policy_accel.train.trainer import train

    path = train(load_config("train", args))
    print(f"EMA policy written to {path}")
