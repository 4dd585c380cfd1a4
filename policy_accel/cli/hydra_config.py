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


def load_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<name>.yaml`` with command-line ``key=value`` overrides.

    Unknown keys are errors (hydra's struct mode), so a typo never silently does nothing.
    """
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name=name, overrides=overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise SystemExit(f"policy-accel: bad config for '{name}': {exc}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg
