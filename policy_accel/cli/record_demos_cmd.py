"""``policy-accel record-demos [key=value ...]``: Meta-World expert demos into a zarr, see configs/record_demos.yaml."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.options import boolean, check_options, non_negative_int, positive_int

CONFIG_NAME = "record_demos"


def _non_negative_number(value: object) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and value == value
    return None if ok and value != float("inf") else "a finite number >= 0"


def _optional_positive_int(value: object) -> str | None:
    return None if value is None else positive_int(value)


def run(args: list[str]) -> None:
    cfg = load_config(CONFIG_NAME, args)
    check_options(
        cfg,
        "record-demos",
        {
            "episodes_per_task": positive_int,
            "seed_start": non_negative_int,
            "noise_seed": non_negative_int,
            "max_attempts_per_task": _optional_positive_int,
            "action_noise": _non_negative_number,
            "settle_steps": non_negative_int,
            "clean_episodes": non_negative_int,
            "overwrite": boolean,
            "progress": boolean,
        },
    )
    from policy_accel.envs.metaworld.tasks import normalise_task
    from policy_accel.eval.families import METAWORLD
    from policy_accel.eval.families.metaworld_demos import format_stats, stats_path

    tasks = list(OmegaConf.to_container(cfg.tasks)) if OmegaConf.is_list(cfg.tasks) else [cfg.tasks]
    try:
        tasks = [normalise_task(t) for t in tasks]
    except ValueError as exc:
        raise SystemExit(f"policy-accel record-demos: tasks: {exc}") from None
    output = Path(str(cfg.output))
    if output.exists():
        if not cfg.overwrite:
            raise SystemExit(
                f"policy-accel record-demos: output '{output}' exists; pass overwrite=true or another output="
            )
        shutil.rmtree(output)
    warnings.filterwarnings("ignore", message="Constant.*may be too high")  # Meta-World's experts, harmless
    try:
        summary = METAWORLD.record_demos(
            tasks,
            int(cfg.episodes_per_task),
            output,
            seed_start=int(cfg.seed_start),
            max_attempts_per_task=cfg.max_attempts_per_task,
            action_noise=float(cfg.action_noise),
            settle_steps=int(cfg.settle_steps),
            clean_episodes=int(cfg.clean_episodes),
            noise_seed=int(cfg.noise_seed),
            progress=bool(cfg.progress),
        )
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"policy-accel record-demos: {exc}") from None
    print(format_stats(summary))
    print(f"expert statistics written to {stats_path(output)}")
