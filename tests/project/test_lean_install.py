"""The core install runs a policy: ``load`` + ``select_action`` work in a process where no optional
extra (simulators, datasets, plots, clusters) can be imported, and a missing extra is an error that
names the ``pip install`` to run."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from helpers.paths import CHECKPOINTS, DP_FIXTURES, LEROBOT_FIXTURES, REPO, TEACHER, needs_shared

OPTIONAL = (
    "gymnasium",
    "pymunk",
    "shapely",
    "zarr",
    "numcodecs",
    "matplotlib",
    "metaworld",
    "mujoco",
    "dask",
    "distributed",
)

BLOCKER = """
import sys
for _name in {blocked!r}:
    sys.modules[_name] = None  # as if not installed: `import` raises ModuleNotFoundError, find_spec gives None
"""


def run_without(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    script = BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], cwd=REPO.parent, capture_output=True, text=True, timeout=300)


def test_core_path_runs_without_any_optional_package():
    result = run_without(
        OPTIONAL,
        f"""
        import sys
        import numpy as np
        import policy_accel
        policy = policy_accel.load({str(TEACHER)!r}, sampler="ddim-4", threads=1)
        policy.reset(seed=0)
        action = policy.select_action(np.full(20, 256.0, dtype=np.float32))
        assert action.shape == (2,) and np.isfinite(action).all(), action
        policy.set_sampler({{"name": "student",
                            "checkpoint": {str(CHECKPOINTS / "pusht_keypoints_student_1step.safetensors")!r}}})
        policy.reset(seed=0)
        assert policy.select_action(np.full(20, 256.0, dtype=np.float32)).shape == (2,)
        loaded = sorted(m for m in {OPTIONAL!r} if sys.modules.get(m) is not None)
        assert not loaded, loaded
        print("core ok")
    """,
    )
    assert result.returncode == 0, result.stderr
    assert "core ok" in result.stdout


@needs_shared(DP_FIXTURES / "lowdim_cnn.ckpt")
@needs_shared(LEROBOT_FIXTURES / "diffusion_state")
def test_foreign_formats_load_without_optional_packages():
    result = run_without(
        OPTIONAL,
        f"""
        import policy_accel
        for path in ({str(DP_FIXTURES / "lowdim_cnn.ckpt")!r}, {str(LEROBOT_FIXTURES / "diffusion_state")!r}):
            policy_accel.load(path, sampler="ddim-2")
        print("formats ok")
    """,
    )
    assert result.returncode == 0, result.stderr
    assert "formats ok" in result.stdout


@pytest.mark.parametrize(
    ("blocked", "env_id", "extra"),
    [(("pymunk",), "policy_accel/PushT-v0", "pusht"), (("metaworld",), "policy_accel/MetaWorld-reach-v0", "metaworld")],
)
def test_an_env_without_its_extra_names_the_install(blocked, env_id, extra):
    result = run_without(
        blocked,
        f"""
        import gymnasium as gym
        import policy_accel
        try:
            gym.make({env_id!r}).reset(seed=0)
        except ImportError as exc:
            print("ERROR:", exc)
    """,
    )
    assert result.returncode == 0, result.stderr
    assert f'pip install "policy-accel[{extra}]"' in result.stdout, result.stdout


def test_a_command_without_its_extra_names_the_install():
    result = run_without(
        ("gymnasium",),
        """
        from policy_accel.cli.main import main
        main(["eval", "sampler=ddim-2", "n_seeds=1"])
    """,
    )
    assert result.returncode != 0
    assert 'pip install "policy-accel[eval]"' in result.stderr, result.stderr
