"""``policy-accel``: train, evaluate and benchmark accelerated diffusion policies.

Each command lives in its own module ``policy_accel/cli/<command>_cmd.py`` with a
``run(args: list[str]) -> None``; most take hydra ``key=value`` overrides of their
config in ``configs/``.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("policy_accel.cli.train_cmd", "train a Diffusion Policy teacher (configs/train.yaml)"),
    "eval": (
        "policy_accel.cli.eval_cmd",
        "roll out a checkpoint + sampler on seeded PushT or Meta-World episodes (configs/eval.yaml)",
    ),
    "distill": (
        "policy_accel.cli.distill_cmd",
        "progressive distillation into few-step students (configs/distill.yaml, configs/per_env/distill/)",
    ),
    "bench": ("policy_accel.cli.bench_cmd", "latency/reward benchmark of every sampler (configs/bench.yaml)"),
    "profile": ("policy_accel.cli.profile_cmd", "where a chunk's time goes per sampler (configs/profile.yaml)"),
    "latency": ("policy_accel.cli.latency_cmd", "chunk latency beside a competing CPU process, per torch thread count"),
    "convert": ("policy_accel.cli.convert_cmd", "convert a checkpoint (e.g. Diffusion Policy .ckpt) to .safetensors"),
    "record-demos": (
        "policy_accel.cli.record_demos_cmd",
        "record Meta-World expert demos into a zarr (configs/record_demos.yaml)",
    ),
    "replay-demos": ("policy_accel.cli.replay_demos_cmd", "replay the human demos in the simulator: PATH to the zarr"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return (
        "usage: policy-accel COMMAND [args | key=value ...]\n       policy-accel COMMAND --help\n"
        "       policy-accel --version\n\ncommands:\n" + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    if argv[0] in ("-V", "--version"):
        from policy_accel import __version__

        print(f"policy-accel {__version__}")
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise SystemExit(f"policy-accel: unknown command '{command}'\n{usage()}")
    try:
        _run(command, rest)
    except ImportError as exc:  # an optional extra that this install lacks: say which to install
        from policy_accel.extras import missing_extra_hint

        hint = missing_extra_hint(exc)
        if hint is None:
            raise
        raise SystemExit(f"policy-accel {command}: {hint}") from exc


def _run(command: str, rest: list[str]) -> None:
    module = importlib.import_module(COMMANDS[command][0])
    config_name = getattr(module, "CONFIG_NAME", None)  # hydra commands; the others parse their own --help
    if config_name is not None and any(arg in ("-h", "--help") for arg in rest):
        from policy_accel.cli.help import config_help

        print(config_help(command, config_name, COMMANDS[command][1]))
        return
    module.run(rest)


if __name__ == "__main__":
    main()
