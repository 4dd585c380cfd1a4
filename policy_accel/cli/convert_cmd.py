"""``policy-accel convert IN OUT.safetensors``: turn any loadable checkpoint into the project's safetensors file.

A Diffusion Policy ``.ckpt`` is a pickle; converting it once gives a plain tensor file (no pickle, no
omegaconf needed) that ``policy_accel.load`` and every command read to the same actions.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="policy-accel convert",
        description="Convert a checkpoint (Diffusion Policy .ckpt, LeRobot pretrained_model/ directory, or a "
        "policy-accel .safetensors) into a policy-accel .safetensors file. The input format is detected.",
    )
    parser.add_argument("input", type=Path, help="the checkpoint to convert")
    parser.add_argument("output", type=Path, help="where to write the .safetensors file")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    return parser


def run(args: list[str]) -> None:
    """Read INPUT with the format that recognises it and write it as the project's safetensors file."""
    options = _parser().parse_args(args)
    if options.output.suffix != ".safetensors":
        raise SystemExit(f"policy-accel convert: OUTPUT must end in .safetensors, got '{options.output}'")
    if options.output.exists() and not options.force:
        raise SystemExit(f"policy-accel convert: '{options.output}' exists (pass --force to overwrite)")
    if options.input.resolve() == options.output.resolve():
        raise SystemExit("policy-accel convert: INPUT and OUTPUT are the same file")
    from policy_accel.formats import read_checkpoint
    from policy_accel.policy.loading import CheckpointError, build_policy, save_policy

    try:  # through the format registry: any readable format converts, detected from the path
        loaded = read_checkpoint(options.input)
        policy = build_policy(loaded)
    except (CheckpointError, FileNotFoundError) as exc:
        raise SystemExit(f"policy-accel convert: {exc}") from None
    save_policy(policy, options.output, extra_metadata={"converted_from": options.input.name})
    cfg = policy.config
    n_params = sum(p.numel() for p in policy.parameters())
    print(
        f"wrote {options.output} (from a {loaded.format}): {cfg.network} policy, {n_params:,} parameters, "
        f"horizon {cfg.horizon}, n_obs_steps {cfg.n_obs_steps}, n_action_steps {cfg.n_action_steps}, observations "
        f"{list(cfg.obs_shapes) if cfg.obs_shapes else f'({cfg.obs_dim},)'}"
    )
