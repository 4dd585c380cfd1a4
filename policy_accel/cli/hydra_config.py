"""Compose the hydra configs of ``configs/`` for the CLI commands.

Configs are closed: ``key=value`` and ``+key=value`` for a key no config has are errors, so a
typo never silently does nothing. Paths written in configs as ``${project:...}`` resolve against
the project (see :mod:`policy_accel.paths`).
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from policy_accel.paths import CONFIG_DIR_ENV, config_dir, project_path

__all__ = ["CONFIG_DIR_ENV", "config_dir", "expand_sampler_shorthand", "load_config"]

if not OmegaConf.has_resolver("project"):
    OmegaConf.register_new_resolver("project", lambda relative: str(project_path(str(relative))))


def expand_sampler_shorthand(overrides: list[str], directory: Path) -> list[str]:
    """``sampler=ddim-10`` -> ``sampler=ddim sampler.num_steps=10`` (``configs/sampler`` is a
    config group of sampler kinds; the step count is a field of each)."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        kind, dash, steps = value.partition("-")
        if key == "sampler" and sep and dash and steps.isdigit() and (directory / "sampler" / f"{kind}.yaml").is_file():
            out += [f"sampler={kind}", f"sampler.num_steps={steps}"]
        else:
            out.append(override)
    return out


def _compose(directory: Path, name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(directory), version_base=None):
        return compose(config_name=name, overrides=overrides)


def _closed_additions(directory: Path, name: str, overrides: list[str]) -> list[str]:
    """``+key=value`` / ``++key=value`` may only set keys the config already has (then they are
    plain overrides); adding a key no config has is refused, like a misspelt ``key=value``."""
    plain = [o for o in overrides if not o.startswith("+")]
    additions = [o for o in overrides if o.startswith("+")]
    if not additions:
        return overrides
    base = _compose(directory, name, plain)
    out = list(plain)
    for override in additions:
        key, sep, value = override.lstrip("+").partition("=")
        if not sep or OmegaConf.select(base, key, default=_MISSING) is _MISSING:
            raise SystemExit(
                f"policy-accel: bad config for '{name}': '{override}' adds key '{key}', which no "
                f"policy-accel config has; see `policy-accel {name.split('/')[0]} --help`"
            )
        out.append(f"{key}={value}")
    return out


_MISSING = object()


def load_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<name>.yaml`` with command-line ``key=value`` overrides (struct mode)."""
    directory = config_dir()
    overrides = expand_sampler_shorthand(overrides, directory)
    try:
        overrides = _closed_additions(directory, name, overrides)
        cfg = _compose(directory, name, overrides)
        OmegaConf.resolve(cfg)  # ${project:...} and interpolations: errors here, not mid-run
    except (HydraException, OmegaConfBaseException) as exc:
        raise SystemExit(f"policy-accel: bad config for '{name}': {exc}") from None
    if missing := sorted(OmegaConf.missing_keys(cfg)):
        env = OmegaConf.select(cfg, "env.id", default=None)
        if env is not None and OmegaConf.select(cfg, "env.obs_type", default=None):
            env = f"{env}, obs_type {cfg.env.obs_type}"
        raise SystemExit(
            f"policy-accel: bad config for '{name}': no value for {', '.join(missing)}; "
            + (
                f"policy-accel ships no default for this env ({env}), so give it on the command line, "
                if env
                else "give it on the command line, "
            )
            + f"e.g. {missing[0]}=PATH (see `policy-accel {name.split('/')[0]} --help`)"
        )
    OmegaConf.set_struct(cfg, True)
    return cfg
