"""Which torch device to run on, chosen once, with errors that say what exists.

``"auto"`` is CUDA when torch sees a GPU, else the CPU; an explicit device that is not there
(``"cuda"`` on a CPU-only machine, ``"cuda:3"`` on a one-GPU machine) is an error naming what was
asked and what this machine has, never a silent fallback to the CPU.
"""

from __future__ import annotations

import contextlib
import platform
import time
from typing import Iterator

import torch


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> ``cuda`` when available else ``cpu``; anything else must exist here."""
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device {device!r} is not a torch device ('auto', 'cpu', 'cuda', 'cuda:1', ...): {exc}"
        ) from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = resolved.index or 0
        if index >= count:
            raise ValueError(
                f"device {str(device)!r} was asked for, but this machine has "
                f"{'no CUDA device' if count == 0 else f'{count} CUDA device(s)'} "
                f"(available: {', '.join(available_devices())}; torch {torch.__version__}, "
                f"CUDA build {torch.version.cuda or 'none'})"
            )
        return resolved
    raise ValueError(
        f"device {str(device)!r}: policy-accel runs on 'cpu' or 'cuda' devices "
        f"(available: {', '.join(available_devices())})"
    )


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU): timers must not stop at the launch."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed(device: torch.device | str, into: list[float]) -> Iterator[None]:
    """Append the block's wall time to ``into``, synchronising the device before and after."""
    synchronize(device)
    start = time.perf_counter()
    try:
        yield
    finally:
        synchronize(device)
        into.append(time.perf_counter() - start)


def device_info(device: torch.device | str) -> dict[str, str | int | None]:
    """What a latency number was measured on: the card, driver/CUDA versions and torch (CPU facts are in
    the report's machine section)."""
    device = torch.device(device)
    info: dict[str, str | int | None] = {"device": str(device), "torch": torch.__version__}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            name=props.name,
            memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            capability=f"{props.major}.{props.minor}",
        )
        with contextlib.suppress(Exception):
            import subprocess

            info["driver"] = (
                subprocess.run(
                    ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                .stdout.split("\n")[0]
                .strip()
            )
    return info


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one): every report names its machine with it,
    and the window-calibration cache keys on it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
