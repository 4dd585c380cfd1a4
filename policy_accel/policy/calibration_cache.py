"""Reuse a Picard window calibration across runs: one JSON file per user, keyed by what the choice depends on.

Calibrating ``window="auto"`` times full Picard solves for every candidate window (seconds to
minutes on a CPU). The answer depends only on the machine, the network, the device, the thread
count, the sampler's settings and the chunk shape, so it is cached under a key made of exactly
those and reused by the next ``policy.warmup()`` on the same machine.

The file lives in ``$POLICY_ACCEL_CACHE_DIR`` (default ``~/.cache/policy_accel``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

import torch

from policy_accel.device import cpu_model

CACHE_DIR_ENV = "POLICY_ACCEL_CACHE_DIR"
CACHE_FILE = "window_calibration.json"


def cache_path() -> Path:
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "policy_accel"
    return Path(root) / CACHE_FILE


def machine_fingerprint(device: torch.device) -> str:
    """Host, CPU model and core count, torch version, and the accelerator's name when there is one."""
    parts = [platform.node(), cpu_model(), str(os.cpu_count()), torch.__version__, device.type]
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    return " | ".join(parts)


def model_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 of the network's weights (names, shapes, bytes): another model never reuses a window."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def calibration_key(
    model_hash: str, device: torch.device, threads: int, sampler_settings: Mapping[str, Any], shape: tuple[int, ...]
) -> str:
    """A readable key: machine, model, device, threads, sampler settings and chunk shape."""
    settings = json.dumps(dict(sampler_settings), sort_keys=True, default=str)
    return (
        f"{machine_fingerprint(device)} || model {model_hash} || device {device} || threads {threads} || "
        f"{settings} || shape {list(shape)}"
    )


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}  # a missing or corrupt cache is only a cache: recalibrate
    return data if isinstance(data, dict) else {}


def load_calibration(key: str) -> dict[str, Any] | None:
    entry = _read(cache_path()).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("window"), int):
        return None
    return _int_keys(entry)


def store_calibration(key: str, calibration: Mapping[str, Any]) -> Path:
    """Add one calibration to the cache file (written atomically; other entries kept)."""
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read(path)
    data[key] = json.loads(json.dumps(dict(calibration), default=float))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def _int_keys(entry: dict[str, Any]) -> dict[str, Any]:
    """JSON turns the per-window dicts' int keys into strings; turn them back."""
    out = dict(entry)
    for field in ("latency_s", "rounds", "call_cost_s"):
        if isinstance(out.get(field), dict):
            out[field] = {int(k): v for k, v in out[field].items()}
    return out
