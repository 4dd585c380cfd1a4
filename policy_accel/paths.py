"""Where the project's own files are, wherever it runs from.

The configs (``configs/``) and shipped models (``checkpoints/``) are top-level folders of the
repository and package data of an installed wheel. Paths written in the configs say
``${project:checkpoints/...}`` and resolve against the project (the installed package, or the
checkout for an editable install), never against the caller's working directory; paths a user
types on the command line are the user's and stay relative to the working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_DIR_ENV = "POLICY_ACCEL_CONFIGS"

_PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The installed package (a wheel carries configs/ and checkpoints/ inside it), else the checkout."""
    if (_PACKAGE_DIR / "configs").is_dir():
        return _PACKAGE_DIR
    return _PACKAGE_DIR.parent


def config_dir() -> Path:
    """``$POLICY_ACCEL_CONFIGS`` when set (a user's own config tree, on purpose), else the project's configs."""
    override = os.environ.get(CONFIG_DIR_ENV)
    directory = Path(override) if override else project_root() / "configs"
    if not (directory / "eval.yaml").is_file():
        where = f"${CONFIG_DIR_ENV}={override}" if override else f"the installed package ({directory})"
        raise FileNotFoundError(
            f"no policy-accel config tree (eval.yaml, ...) in {where}; reinstall the package"
            + (f" or unset {CONFIG_DIR_ENV}" if override else "")
        )
    return directory.resolve()


def project_path(relative: str | os.PathLike[str]) -> Path:
    """A path of the project's own (e.g. ``checkpoints/pusht_keypoints_teacher.safetensors``), absolute."""
    path = Path(relative)
    return path if path.is_absolute() else (project_root() / path).resolve()


def shipped_or_given(path: str | os.PathLike[str]) -> Path:
    """``path`` as given when it exists; else, for ``checkpoints/...``, the project's shipped file of that name.

    Lets ``policy_accel.load("checkpoints/pusht_keypoints_teacher.safetensors")`` work from any directory
    without ever preferring a shipped file over a user's file of the same relative path."""
    given = Path(path)
    if given.exists() or given.is_absolute() or not given.parts or given.parts[0] != "checkpoints":
        return given
    shipped = project_path(given)
    return shipped if shipped.exists() else given
