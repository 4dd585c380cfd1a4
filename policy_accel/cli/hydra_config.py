"""Compose the hydra configs of ``configs/`` for the CLI commands."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONFIG_DIR_ENV = "POLICY_ACCEL_CONFIGS"


def config_dir() -> Path:
    """``$POLICY_ACCEL_CONFIGS``, else ``./configs``, else the checkout's ``configs/``."""
    candidates = [os.environ.get(CONFIG_DIR_ENV), Path.cwd() / "configs",
                  Path(__file__).resolve().parents[2] / "configs"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.yaml").is_file():
            return Path(candidate).resolve()
    raise FileNotFoundError(
        f"no hydra config tree found (looked in ${CONFIG_DIR_ENV}, ./configs and the package checkout); "
        "run from the repository root or set " + CONFIG_DIR_ENV)


def expand_sampler_shorthand(overrides: list[str], directory: Path) -> list[str]:
    """``sampler=ddim-10`` -> ``sampler=ddim sampler.num_steps=10`` (``configs/sampler`` is a
    config group of sampler kinds; the step count is a field of each)."""
    out = []
    for override in overrides:
        key, sep, value = override.partition("=")
        kind, dash, steps = value.partition("-")
        if (key == "sampler" and sep and dash and steps.isdigit()
                and (directory / "sampler" / f"{kind}.yaml").is_file()):
            out += [f"sampler={kind}", f"sampler.num_steps={steps}"]
        else:
            out.append(override)
    return out


def load_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<name>.yaml`` with command-line ``key=value`` overrides.

    Unknown keys are errors (hydra's struct mode), so a typo never silently does nothing.
    """
    overrides = expand_sampler_shorthand(overrides, config_dir())
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise SystemExit(f"policy-accel: bad config for '{name}': {exc}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg
