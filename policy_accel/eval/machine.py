"""What a latency number was measured on: the machine facts every evaluation and benchmark report carries."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch

from policy_accel.device import cpu_model


def machine_info() -> dict[str, Any]:
    """Facts that make a latency number interpretable: CPU, core and thread counts, versions."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
