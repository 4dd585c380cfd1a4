"""``policy-accel eval [key=value ...]``: score a checkpoint + sampler on seeded PushT episodes.

See configs/eval.yaml. Writes ``report.json`` / ``report.md`` into ``output_dir`` and
prints the Markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from policy_accel.cli.hydra_config import load_config


def _sampler_spec(cfg: DictConfig) -> Any:
    """A plain string or dict for ``build_sampler`` (hydra gives mappings as DictConfig)."""
    spec = cfg.sampler
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec


def _output_dir(cfg: DictConfig, sampler_name: str) -> Path:
    """``output_dir``; ``${sampler}`` in it becomes the sampler's name when the spec is a mapping."""
    if isinstance(cfg.sampler, str):
        return Path(str(cfg.output_dir))
    raw = OmegaConf.to_container(cfg, resolve=False)["output_dir"]
    return Path(str(raw).replace("${sampler}", sampler_name))


def _load_eval_config(args: list[str]) -> DictConfig:
    """``load_config("eval", args)``, with ``sampler=NAME`` taken as a value, not a config group.

    ``configs/sampler/`` is a hydra config group, so hydra would read ``sampler=ddim-10`` as
    "pick configs/sampler/ddim-10.yaml" and fail; names are applied after composing instead.
    Mapping values (``sampler={name: ddim, num_steps: 4}``) already compose as values.
    """
    parser = OverridesParser.create()
    rest, names = [], []
    for arg in args:
        try:
            override = parser.parse_overrides([arg])[0]
        except HydraException:
            rest.append(arg)  # hydra reports the syntax error below
            continue
        is_name = (override.key_or_group == "sampler" and override.package is None
                   and override.type in (OverrideType.CHANGE, OverrideType.FORCE_ADD)
                   and isinstance(override.value(), str))
        if is_name:
            names.append(override.value())
        else:
            rest.append(arg)
    cfg = load_config("eval", rest)
    for name in names:
        cfg.sampler = name
    return cfg


def run(args: list[str]) -> None:
    cfg = _load_eval_config(args)
    import torch

    from policy_accel.eval.report import markdown_table, write_report
    from policy_accel.eval.rollout import evaluate_policy
    from policy_accel.policy.checkpoint import CheckpointError, load_policy

    checkpoint = Path(str(cfg.checkpoint))
    if not checkpoint.is_file():
        raise SystemExit(f"policy-accel eval: checkpoint not found: '{checkpoint}' "
                         "(pass checkpoint=PATH, or train one with `policy-accel train`)")
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    spec = _sampler_spec(cfg)
    try:
        policy = load_policy(checkpoint, sampler=spec)
    except CheckpointError as exc:
        raise SystemExit(f"policy-accel eval: {exc}") from None
    except (ValueError, TypeError) as exc:  # a bad sampler spec
        raise SystemExit(f"policy-accel eval: bad sampler {spec!r}: {exc}") from None
    for key in ("n_seeds", "n_envs", "max_steps"):
        if int(cfg[key]) < 1:
            raise SystemExit(f"policy-accel eval: {key} must be >= 1, got {cfg[key]}")
    if policy.config.obs_type != cfg.env.obs_type:
        raise SystemExit(f"policy-accel eval: '{checkpoint}' was trained on obs_type "
                         f"'{policy.config.obs_type}' but env gives '{cfg.env.obs_type}'; "
                         f"pass env=pusht_{policy.config.obs_type}")

    output_dir = _output_dir(cfg, policy.sampler.name)
    seeds = list(range(int(cfg.seed_start), int(cfg.seed_start) + int(cfg.n_seeds)))
    result = evaluate_policy(policy, sampler=None, env_cfg=cfg.env, seeds=seeds, n_envs=int(cfg.n_envs),
                             progress=True, max_steps=int(cfg.max_steps), record_video_episodes=int(cfg.videos),
                             video_dir=output_dir / "videos")
    result["checkpoint"] = str(checkpoint)
    result["sampler_spec"] = spec
    json_path, md_path = write_report(result, output_dir)
    print(markdown_table([result]))
    print(f"\nreport: {md_path}\n        {json_path}")
    for video in result["videos"]:
        print(f"video:  {video}")
