"""Every shipped student plans the same chunk as when it was committed, on fixed conditioning and noise.

Checking that a student's actions land in the workspace cannot fail (samples are clipped), and its NFE equals
its step count by construction; a chunk compared with a stored reference breaks on wrong weights, a wrong grid,
a wrong parameterisation or a loader that drops a tensor. The reference (``shipped_student_chunks.npz``, a few
KB) is regenerated, deliberately, after re-shipping a student: ``python tests/distill/test_shipped_student_chunks.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).with_name("shipped_student_chunks.npz")
STUDENT_FILES = [
    *[f"pusht_keypoints_student_{k}step.safetensors" for k in (4, 2, 1)],
    *[f"pusht_keypoints_student_{k}step_small.safetensors" for k in (4, 2, 1)],
    *[f"pusht_keypoints_student_{k}step_wide.safetensors" for k in (4, 2)],
    *[f"metaworld_mt10_student_{k}step.safetensors" for k in (4, 2, 1)],
]
BATCH = 3
# float32 CPU rounding across machines is ~1e-6 here; the students differ from one another and from a
# one-tensor-off loader by 1e-2 .. 1 (normalised action units)
ATOL = 1e-4


def student_chunk(name: str) -> torch.Tensor:
    """The normalised chunk (BATCH, horizon, action_dim) of shipped student ``name`` on seeded inputs."""
    from helpers.paths import CHECKPOINTS

    from policy_accel.samplers import StudentSampler

    student = StudentSampler.from_file(CHECKPOINTS / name)
    cfg = student.policy_config
    generator = torch.Generator().manual_seed(0)
    cond = 0.5 * torch.randn(BATCH, int(cfg["obs_dim"]) * int(cfg["n_obs_steps"]), generator=generator)
    shape = (BATCH, int(cfg["horizon"]), int(cfg["action_dim"]))
    noise = torch.zeros((student.num_steps + 1, *shape))
    noise[0] = torch.randn(shape, generator=generator)  # x_T; the student's DDIM steps add no noise
    out = student.sample(None, cond, shape, noise=noise)
    assert out.stats.nfe == student.num_steps
    return out.sample


@pytest.mark.parametrize("name", STUDENT_FILES)
def test_shipped_student_chunk_matches_the_committed_reference(name):
    expected = np.load(REFERENCE)[name]
    got = student_chunk(name).numpy()
    assert got.shape == expected.shape
    worst = float(np.abs(got - expected).max())
    assert worst <= ATOL, f"{name}: chunk differs from the committed one by {worst:.2e}"


def test_the_students_references_are_distinct():
    """The reference tells the students apart: swapping one student's file for another's would fail."""
    reference = np.load(REFERENCE)
    pusht = [n for n in STUDENT_FILES if n.startswith("pusht")]
    for i, a in enumerate(pusht):
        for b in pusht[i + 1 :]:
            assert float(np.abs(reference[a] - reference[b]).max()) > 100 * ATOL, (a, b)


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    np.savez_compressed(REFERENCE, **{name: student_chunk(name).numpy() for name in STUDENT_FILES})
    print(f"wrote {REFERENCE}")
