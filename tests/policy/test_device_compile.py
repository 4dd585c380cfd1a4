"""Devices and compiled sampling, checked on the CPU: device errors, compiled == eager, seeded determinism,
synchronised timers, and at most one device-to-host transfer per Picard round."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_policy
from helpers.paths import DP_FIXTURES, needs_shared

import policy_accel
from policy_accel.cli.main import main
from policy_accel.device import resolve_device, timed
from policy_accel.samplers import build_sampler

TEACHER = "checkpoints/pusht_keypoints_teacher.safetensors"
STUDENT = "checkpoints/pusht_keypoints_student_2step.safetensors"


def test_auto_picks_what_exists_and_missing_devices_are_named():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"'cuda' was asked for, but this machine has no CUDA device.*cpu"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="cuda:7"):
        resolve_device("cuda:7")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_load_and_commands_refuse_a_missing_device(tmp_path):
    with pytest.raises(ValueError, match="no CUDA device"):
        policy_accel.load(TEACHER, device="cuda")
    with pytest.raises(SystemExit, match="no CUDA device"):
        main(["eval", "device=cuda", f"output_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="compile must be"):
        main(["eval", "compile=fast", f"output_dir={tmp_path}"])


def test_policy_lives_on_its_device_and_takes_observations_from_anywhere():
    policy = policy_accel.load(TEACHER, sampler="ddim-4", device="cpu")
    assert policy.device == torch.device("cpu")
    obs = np.random.default_rng(0).uniform(0, 512, (1, 2, 20)).astype(np.float32)
    policy.reset(seed=3)
    from_numpy = policy.predict_action_chunk(obs)
    policy.reset(seed=3)
    from_tensor = policy.predict_action_chunk(torch.from_numpy(obs).double())
    torch.testing.assert_close(from_numpy, from_tensor)


@pytest.mark.parametrize("sampler", ["ddpm-10", "ddim-4", {"name": "paraddpm", "num_steps": 10, "window": 4}])
def test_same_seed_same_device_identical_actions(sampler):
    policy = tiny_policy(sampler)
    obs = np.random.default_rng(1).uniform(0, 512, (3, 20)).astype(np.float32)
    runs = []
    for _ in range(2):
        policy.reset(seed=11)
        runs.append(np.stack([policy.select_action(o) for o in np.repeat(obs, 4, axis=0)]))
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("sampler", ["ddpm", "ddim-10", {"name": "paraddpm", "num_steps": 100, "window": 8}])
def test_frozen_teacher_gives_the_eager_actions(sampler):
    eager = policy_accel.load(TEACHER, sampler=sampler, device="cpu")
    frozen = policy_accel.load(TEACHER, sampler=sampler, device="cpu", compile=True)
    assert frozen.compile_mode == "freeze" and eager.compile_mode is None
    obs = np.random.default_rng(2).uniform(50, 450, (2, 2, 20)).astype(np.float32)
    noise = torch.randn((eager.sampler.solver.num_steps + 1, 2, 16, 2), generator=torch.Generator().manual_seed(0))
    a = eager.predict_action_chunk(obs, noise=noise)
    b = frozen.predict_action_chunk(obs, noise=noise)
    assert float((a - b).abs().max()) < 1e-2  # env units (pixels); the network outputs agree to ~1e-6


def test_compiled_student_gives_the_eager_actions_and_compiles_once(capsys):
    eager = policy_accel.load(TEACHER, sampler="student", checkpoint=STUDENT, device="cpu")
    frozen = policy_accel.load(TEACHER, sampler="student", checkpoint=STUDENT, device="cpu", compile="freeze")
    assert "compiled the denoiser (freeze)" in capsys.readouterr().err
    obs = np.random.default_rng(3).uniform(50, 450, (1, 2, 20)).astype(np.float32)
    noise = torch.randn((3, 1, 16, 2), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        eager.predict_action_chunk(obs, noise=noise), frozen.predict_action_chunk(obs, noise=noise), atol=1e-3, rtol=0
    )
    frozen.compile(False)
    frozen.compile("freeze")  # back to the cached backend: no second compilation
    assert "compiled the denoiser" not in capsys.readouterr().err


def test_torch_compile_inductor_matches_eager_on_the_cpu():
    policy = tiny_policy({"name": "paraddim", "num_steps": 6, "window": 3})
    obs = np.random.default_rng(4).uniform(0, 512, (2, 2, 20)).astype(np.float32)
    noise = torch.randn((7, 2, 16, 2), generator=torch.Generator().manual_seed(0))
    eager = policy.predict_action_chunk(obs, noise=noise)
    policy.compile("inductor")
    torch.testing.assert_close(policy.predict_action_chunk(obs, noise=noise), eager, atol=1e-3, rtol=1e-4)


def test_timer_synchronises_the_device_before_and_after(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(str(device)))
    times: list[float] = []
    with timed("cuda:0", times):
        calls.append("work")
    assert calls == ["cuda:0", "work", "cuda:0"] and len(times) == 1 and times[0] >= 0
    with timed("cpu", times):
        pass
    assert len(calls) == 3 and len(times) == 2  # nothing to wait for on the CPU


def test_picard_reads_the_device_once_per_round(monkeypatch):
    """The loop decides how far to slide from one small transfer per round, and syncs nowhere else."""
    sampler = build_sampler({"name": "paraddpm", "num_steps": 20, "window": 4, "tolerance": 0.1})
    policy = tiny_policy()
    cond = torch.zeros(1, 40)
    counts = {"tolist": 0, "other": 0}
    for name in ("tolist", "item", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, _name=name, **kwargs):
            counts["tolist" if _name == "tolist" else "other"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    out = sampler.sample(policy.denoise, cond, (1, 16, 2), generator=torch.Generator().manual_seed(0))
    monkeypatch.undo()
    assert counts["tolist"] == out.stats.rounds
    assert counts["other"] <= 4  # input checks before the loop and the final finiteness check after it


@needs_shared(DP_FIXTURES / "hybrid_image_cnn.ckpt")
def test_compiled_image_policy_encoder_and_denoiser_give_the_eager_chunk(capsys):
    """An image policy compiles its observation encoder too (run once per chunk, most of a small chunk)."""
    path = DP_FIXTURES / "hybrid_image_cnn.ckpt"
    policy = policy_accel.load(path, sampler="ddim-4", device="cpu")
    generator = torch.Generator().manual_seed(0)
    obs = {
        k: torch.rand(1, policy.config.n_obs_steps, *v["shape"], generator=generator)
        for k, v in policy.config.obs_shapes.items()
    }
    noise = torch.randn(5, 1, policy.config.horizon, policy.config.action_dim, generator=generator)
    eager = policy.predict_action_chunk(obs, noise=noise)
    policy.compile("freeze")
    assert "compiled the observation encoder (freeze)" in capsys.readouterr().err
    assert float((policy.predict_action_chunk(obs, noise=noise) - eager).abs().max()) < 1e-2


def test_actions_leave_as_numpy_or_as_a_tensor_on_request():
    policy = tiny_policy("ddim-3")
    obs = np.full(20, 200.0, dtype=np.float32)
    policy.reset(seed=0)
    as_numpy = policy.select_action(obs)
    policy.reset(seed=0)
    as_tensor = policy.select_action(obs, as_tensor=True)
    assert isinstance(as_numpy, np.ndarray) and isinstance(as_tensor, torch.Tensor)
    np.testing.assert_array_equal(as_tensor.numpy(), as_numpy)
