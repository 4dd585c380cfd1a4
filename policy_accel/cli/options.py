"""Check a command's options and outputs before any work starts.

A rollout or a training run can take an hour; a typo in ``n_seeds`` or an unwritable
``output_dir`` must fail in the first second with a message naming the option, not with a
traceback after the work is done.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from omegaconf import DictConfig, OmegaConf

Check = Callable[[Any], str | None]  # None when the value is fine, else what it must be


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 1 else "an integer >= 1"


def non_negative_int(value: Any) -> str | None:
    return None if _is_int(value) and value >= 0 else "an integer >= 0"


def threads(value: Any) -> str | None:
    return None if value is None or (_is_int(value) and value >= 1) else "an integer >= 1, or null for torch's default"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def positive_number(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return None if ok else "a positive finite number"


def check_options(cfg: DictConfig, command: str, checks: Mapping[str, Check]) -> None:
    """Raise ``SystemExit`` naming every option (dotted key) whose value fails its check."""
    problems = []
    for key, check in checks.items():
        value = OmegaConf.select(cfg, key)
        expected = check(value)
        if expected is not None:
            problems.append(f"{key} must be {expected}, got {value!r}")
    if problems:
        raise SystemExit(f"policy-accel {command}: " + "; ".join(problems))


def prepare_output_dir(path: str | os.PathLike[str], command: str, what: str = "output_dir") -> Path:
    """Create ``path`` (a folder) and prove it writable now, so the run's results cannot be lost at the end."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise SystemExit(f"policy-accel {command}: {what} '{folder}' is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".policy_accel_write_test_{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SystemExit(f"policy-accel {command}: cannot write to {what} '{folder}': {exc.strerror or exc}") from None
    return folder


def compile_option(value: Any) -> str | None:
    ok = isinstance(value, bool) or value in ("freeze", "inductor", "reduce-overhead")
    return None if ok else "true, false, freeze, inductor or reduce-overhead"


def device_option(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "a device name: auto, cpu, cuda or cuda:N"


def target_device(cfg: DictConfig, command: str) -> Any:
    """The configured device, or ``SystemExit`` naming what was asked and what exists."""
    from policy_accel.device import resolve_device

    try:
        return resolve_device(str(cfg.device))
    except ValueError as exc:
        raise SystemExit(f"policy-accel {command}: {exc}") from None


def place_policy(policy: Any, cfg: DictConfig, command: str) -> Any:
    """Move ``policy`` to ``cfg.device`` and compile it when ``cfg.compile`` asks (announced, checked)."""
    policy.to(target_device(cfg, command))
    if cfg.compile:
        try:
            policy.compile(cfg.compile)
        except (RuntimeError, ValueError) as exc:
            raise SystemExit(f"policy-accel {command}: compile={cfg.compile}: {exc}") from None
    return policy
