"""``policy-accel train [key=value ...]``: train (or resume) a teacher, see configs/train.yaml."""

from __future__ import annotations

from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import (
    boolean,
    check_options,
    compile_option,
    device_option,
    non_negative_int,
    positive_int,
    prepare_output_dir,
    target_device,
    threads,
)

CONFIG_NAME = "train"


def run(args: list[str]) -> None:
    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "train",
        {
            "train.num_steps": positive_int,
            "train.batch_size": positive_int,
            "train.log_every": positive_int,
            "train.val_every": non_negative_int,
            "train.ckpt_every": positive_int,
            "train.rollout_every": non_negative_int,
            "seed": non_negative_int,
            "threads": threads,
            "resume": boolean,
            "device": device_option,
            "compile": compile_option,
        },
    )
    target_device(cfg, "train")
    prepare_output_dir(str(cfg.run_dir), "train", what="run_dir")
    from policy_accel.data.replay_buffer import ReplayBufferError
    from policy_accel.train.trainer import train

    try:
        path = train(cfg)
    except ReplayBufferError as exc:  # demonstrations that cannot train this policy (e.g. no task ids)
        raise SystemExit(f"policy-accel train: dataset.zarr_path: {exc}") from None
    print(f"EMA policy written to {path}")
