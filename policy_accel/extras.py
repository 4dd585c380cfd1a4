"""Which optional extra brings which import, so a missing one is an error that says what to install.

The core install (``pip install policy-accel``) loads checkpoints and runs samplers; simulators,
datasets, plots and clusters are extras. ``envs/`` keeps its own messages (it imports nothing of
the package); everything else names the extra through :func:`missing_extra_hint`.
"""

from __future__ import annotations

# top-level module -> the extra that installs it
EXTRA_OF_MODULE: dict[str, str] = {
    "gymnasium": "eval",
    "pymunk": "pusht",
    "shapely": "pusht",
    "metaworld": "metaworld",
    "mujoco": "metaworld",
    "zarr": "train",
    "numcodecs": "train",
    "matplotlib": "eval",
    "dask": "dask",
    "distributed": "dask",
}


def missing_extra_hint(error: ImportError) -> str | None:
    """``pip install "policy-accel[EXTRA]"`` for an import of an optional package that failed, else None."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(name)
    if extra is None:
        return None
    return (
        f"'{name}' is not installed; it comes with an optional extra: pip install \"policy-accel[{extra}]\" (or [all])"
    )
