"""Where the tests find the repository and ``../shared`` (one spelling for every test).

``shared/`` lies beside the checkout (CI copies it there); ``POLICY_ACCEL_SHARED`` points elsewhere.
A test that needs a file from it is marked ``@needs_shared(PATH)``: it skips on a developer machine
without the file, and fails in CI (``CI=true``), where a missing shared/ would otherwise turn every
loader-exactness test into a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("POLICY_ACCEL_SHARED") or REPO.parent / "shared")
PUSHT_ZARR = SHARED / "data" / "pusht" / "pusht_cchi_v7_replay.zarr"
DP_FIXTURES = SHARED / "fixtures" / "diffusion_policy"
LEROBOT_FIXTURES = SHARED / "fixtures" / "lerobot"
CHECKPOINTS = REPO / "checkpoints"
TEACHER = CHECKPOINTS / "pusht_keypoints_teacher.safetensors"


def needs_shared(path: Path) -> pytest.MarkDecorator:
    """Mark a test (or a module via ``pytestmark``) as needing ``path`` from shared/ (see conftest)."""
    return pytest.mark.needs_shared(Path(path))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
