"""Progressive distillation: the closed-form target, round halving, resume, students as samplers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_teacher_and_dataset
from helpers.paths import CHECKPOINTS
from torch import nn

import policy_accel
from policy_accel.data.normalizer import Normalizer
from policy_accel.distill import progressive
from policy_accel.distill.progressive import DistillTarget, distill, round_plan, student_loss
from policy_accel.model.config import DiffusionPolicyConfig, UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import save_policy
from policy_accel.samplers import StudentSampler, build_sampler
from policy_accel.samplers.solvers import (
    DEFAULT_NOISE_SCHEDULER,
    DDIMSolver,
    VPredictionDDIMSolver,
    abar_at,
    trailing_grid,
)

NO_CLIP = {**DEFAULT_NOISE_SCHEDULER, "clip_sample": False}
TINY = UnetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16)


class GaussianEps(nn.Module):
    """Exact epsilon predictor for data x ~ N(mu, s^2) per coordinate: a toy teacher."""

    def __init__(self, alphas_cumprod: torch.Tensor, mu: float = 0.3, s: float = 0.2) -> None:
        super().__init__()
        self.abar, self.mu, self.s = alphas_cumprod, mu, s

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        abar = abar_at(self.abar, t).float().view(-1, 1, 1)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        var = alpha**2 * self.s**2 + sigma**2
        x_mean = self.mu + alpha * self.s**2 * (z - alpha * self.mu) / var
        return (z - alpha * x_mean) / sigma


class ComposedStudent(nn.Module):
    """A v-prediction student set to exactly the teacher's two-step composition."""

    def __init__(self, teacher: DistillTarget, student_grid: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.teacher, self.grid, self.abar = teacher, student_grid, alphas_cumprod

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        k = torch.stack([(self.grid == ti).nonzero()[0, 0] for ti in t])
        a, a_next = abar_at(self.abar, t).float(), abar_at(self.abar, self.grid[k + 1]).float()
        alpha, sigma = a.sqrt().view(-1, 1, 1), (1 - a).sqrt().view(-1, 1, 1)
        alpha_n, sigma_n = a_next.sqrt().view(-1, 1, 1), (1 - a_next).sqrt().view(-1, 1, 1)
        z_next = self.teacher.two_steps(z, 2 * k, cond)
        x_target = progressive.distillation_target(z, z_next, alpha, sigma, alpha_n, sigma_n)
        return (alpha * z - x_target) / sigma


@pytest.fixture()
def toy():
    solver = DDIMSolver(NO_CLIP, 8)
    from diffusers import DDPMScheduler

    abar = DDPMScheduler(**NO_CLIP).alphas_cumprod
    teacher = DistillTarget(GaussianEps(abar), solver)
    grid = trailing_grid(100, 4)
    return teacher, grid, abar


def test_one_student_step_equals_two_teacher_steps(toy):
    teacher, grid, abar = toy
    student = ComposedStudent(teacher, grid, abar)
    student_solver = VPredictionDDIMSolver(NO_CLIP, grid)
    z = torch.randn(5, 16, 2, generator=torch.Generator().manual_seed(0))
    cond = torch.zeros(5, 1)
    for k in range(4):
        index = torch.full((5,), k)
        one, _ = student_solver.mean_next(student(z, grid[index], cond), index, z)
        two = teacher.two_steps(z, 2 * index, cond)
        assert torch.allclose(one, two, atol=1e-4), k
        z = two


def test_student_loss_is_zero_for_the_exact_composition_and_positive_otherwise(toy):
    teacher, grid, abar = toy
    x = 0.3 + 0.2 * torch.randn(64, 16, 2, generator=torch.Generator().manual_seed(1))
    cond = torch.zeros(64, 1)
    exact = student_loss(
        ComposedStudent(teacher, grid, abar), teacher, x, cond, grid, abar, torch.Generator().manual_seed(2)
    )
    wrong = student_loss(
        lambda z, t, c: torch.zeros_like(z), teacher, x, cond, grid, abar, torch.Generator().manual_seed(2)
    )
    assert exact < 1e-8 < wrong


def test_rounds_halve_and_grids_nest():
    assert round_plan(64, 1) == [32, 16, 8, 4, 2, 1]
    assert round_plan(64, 4) == [32, 16, 8, 4]
    for n in (1, 2, 4, 8, 16, 32):
        assert trailing_grid(100, n).tolist() == trailing_grid(100, 2 * n).tolist()[::2]
    assert DDIMSolver(DEFAULT_NOISE_SCHEDULER, 64).timesteps.tolist() == trailing_grid(100, 64).tolist()[:-1]
    with pytest.raises(ValueError, match="powers of two"):
        round_plan(48, 2)


def test_distill_runs_rounds_and_resumes_mid_round(tmp_path, monkeypatch):
    teacher, dataset = tiny_teacher_and_dataset()
    run_dir = tmp_path / "distill"
    calls = {"n": 0}
    real_loss = progressive.student_loss

    def failing_loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt  # the session stops mid-round
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(progressive, "student_loss", failing_loss)
    options = dict(start_steps=8, iterations=20, batch_size=16, ckpt_every=10, log_every=10)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, dataset, run_dir, final_steps=4, **options)
    monkeypatch.setattr(progressive, "student_loss", real_loss)
    assert (run_dir / "round_state.pt").exists()
    paths = distill(teacher, dataset, run_dir, final_steps=4, **options)
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "round": 1, "iteration": 10} in log
    assert [p.name for p in paths] == ["student_round1_4steps.safetensors"]
    # a later call with a lower final step count reuses finished rounds and trains only the new one
    paths = distill(teacher, dataset, run_dir, final_steps=2, evaluate=lambda s: {"steps_seen": s.num_steps}, **options)
    assert [p.name for p in paths][-1] == "student_round2_2steps.safetensors"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert sum(1 for r in log if r["event"] == "round_done" and r["round"] == 1) == 1
    assert {"event": "round_done", "round": 2, "steps": 2, "checkpoint": str(paths[-1]), "steps_seen": 2} in log


def test_a_round_resumed_mid_way_ends_with_the_weights_of_an_uninterrupted_round(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    options = dict(start_steps=8, final_steps=4, iterations=20, batch_size=16, ckpt_every=10, log_every=10)
    (straight,) = distill(*tiny_teacher_and_dataset(), tmp_path / "straight", **options)
    real_loss, calls = progressive.student_loss, {"n": 0}

    def stop_after_checkpoint(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:  # iteration 11: the iteration-10 state is on disk
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(progressive, "student_loss", stop_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        distill(*tiny_teacher_and_dataset(), tmp_path / "resumed", **options)
    monkeypatch.setattr(progressive, "student_loss", real_loss)
    (resumed,) = distill(*tiny_teacher_and_dataset(), tmp_path / "resumed", **options)
    log = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "round": 1, "iteration": 10} in log
    a, b = load_file(straight), load_file(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs after the resume"


def test_student_loads_as_a_sampler_of_the_policy(tmp_path):
    teacher, dataset = tiny_teacher_and_dataset()
    (path,) = distill(teacher, dataset, tmp_path / "d", start_steps=4, final_steps=2, iterations=3, batch_size=8)
    teacher_path = save_policy(teacher, tmp_path / "teacher.safetensors")
    policy = policy_accel.load(teacher_path, sampler={"name": "student", "checkpoint": str(path)})
    assert isinstance(policy.sampler, StudentSampler) and policy.sampler.num_steps == 2
    policy.reset(seed=0)
    action = policy.select_action(np.full(20, 250.0))
    assert action.shape == (2,) and np.isfinite(action).all()
    assert policy.last_stats.nfe == 2 == policy.last_stats.rounds

    other = DiffusionPolicy(
        DiffusionPolicyConfig(unet=TINY), Normalizer.fit({"obs": np.random.rand(8, 20), "action": np.random.rand(8, 2)})
    )
    with pytest.raises(ValueError, match="normaliser"):
        other.set_sampler(build_sampler({"name": "student", "checkpoint": str(path)}))
    with pytest.raises(ValueError, match="2-step student, not 4"):
        build_sampler({"name": "student", "checkpoint": str(path), "num_steps": 4})
    with pytest.raises(ValueError, match="needs a checkpoint"):
        build_sampler("student")
    with pytest.raises(FileNotFoundError):
        build_sampler({"name": "student", "checkpoint": str(tmp_path / "none.safetensors")})


def test_a_narrower_student_starts_fresh_and_keeps_its_own_unet(tmp_path):
    teacher, dataset = tiny_teacher_and_dataset()
    narrow = {"down_dims": [8], "kernel_size": 3, "n_groups": 4, "diffusion_step_embed_dim": 8}
    (path,) = distill(
        teacher, dataset, tmp_path / "d", start_steps=4, final_steps=2, iterations=2, batch_size=8, student_unet=narrow
    )
    student = StudentSampler.from_file(path)
    assert student.policy_config["unet"]["down_dims"] == [8]
    assert sum(p.numel() for p in student.network.parameters()) < sum(p.numel() for p in teacher.model.parameters())
    teacher_path = save_policy(teacher, tmp_path / "teacher.safetensors")
    policy = policy_accel.load(teacher_path, sampler={"name": "student", "checkpoint": str(path)})
    policy.reset(seed=0)
    assert np.isfinite(policy.select_action(np.full(20, 250.0))).all()
    with pytest.raises(ValueError, match="unknown unet config keys"):
        distill(
            teacher,
            dataset,
            tmp_path / "e",
            start_steps=4,
            final_steps=2,
            iterations=1,
            batch_size=8,
            student_unet={"down_dim": [8]},
        )


def test_a_chain_continues_from_a_finished_student(tmp_path):
    teacher, dataset = tiny_teacher_and_dataset()
    (four,) = distill(teacher, dataset, tmp_path / "a", start_steps=8, final_steps=4, iterations=2, batch_size=8)
    # lr 0: every round's student keeps its initial weights, which must be the 4-step student's
    paths = distill(
        teacher,
        dataset,
        tmp_path / "b",
        start_steps=4,
        final_steps=1,
        iterations=2,
        batch_size=8,
        lr=0.0,
        start_from=four,
    )
    assert [StudentSampler.from_file(p).num_steps for p in paths] == [2, 1]
    start = StudentSampler.from_file(four).network.state_dict()
    for path in paths:
        continued = StudentSampler.from_file(path).network.state_dict()
        assert all(torch.equal(continued[k], start[k]) for k in start)
    assert not torch.equal(start["final_conv.1.weight"], teacher.model.state_dict()["final_conv.1.weight"])
    narrow = {"down_dims": [8], "kernel_size": 3, "n_groups": 4, "diffusion_step_embed_dim": 8}
    with pytest.raises(ValueError, match="pass the matching student_unet"):
        distill(
            teacher,
            dataset,
            tmp_path / "e",
            start_steps=4,
            final_steps=2,
            iterations=1,
            batch_size=8,
            student_unet=narrow,
            start_from=four,
        )
    with pytest.raises(ValueError, match="4-step student, but start_steps is 8"):
        distill(
            teacher, dataset, tmp_path / "c", start_steps=8, final_steps=2, iterations=1, batch_size=8, start_from=four
        )


SHIPPED = CHECKPOINTS


SHIPPED_STUDENTS = [  # (file, steps, student parameters / teacher parameters at most)
    *[(f"pusht_keypoints_student_{k}step.safetensors", k, 0.65) for k in (4, 2, 1)],  # U-Net 48/96/192
    *[(f"pusht_keypoints_student_{k}step_small.safetensors", k, 0.3) for k in (4, 2, 1)],  # U-Net 64/128
    *[(f"pusht_keypoints_student_{k}step_wide.safetensors", k, 1.0) for k in (4, 2)],  # the teacher's U-Net
]


@pytest.mark.parametrize(("name", "steps", "max_param_ratio"), SHIPPED_STUDENTS)
def test_shipped_students_plan_chunks_under_the_shipped_teacher(name, steps, max_param_ratio):
    teacher_path = SHIPPED / "pusht_keypoints_teacher.safetensors"
    policy = policy_accel.load(teacher_path, sampler={"name": "student", "checkpoint": str(SHIPPED / name)})
    assert policy.sampler.num_steps == steps
    # the default and small students are narrower than the teacher: a call costs less than a teacher call
    student_params = sum(p.numel() for p in policy.sampler.network.parameters())
    assert student_params <= max_param_ratio * sum(p.numel() for p in policy.model.parameters())
    policy.reset(seed=100000)
    actions = np.stack([policy.select_action(np.full(20, 250.0)) for _ in range(9)])
    assert np.isfinite(actions).all() and policy.last_stats.nfe == steps
    assert ((actions >= 0) & (actions <= 512)).all()  # inside PushT's workspace (env units)


def test_a_run_dir_refuses_finished_rounds_of_another_student_unet(tmp_path):
    teacher, dataset = tiny_teacher_and_dataset()
    options = dict(start_steps=4, final_steps=2, iterations=1, batch_size=8)
    distill(teacher, dataset, tmp_path / "d", **options)
    narrow = {"down_dims": [8], "kernel_size": 3, "n_groups": 4, "diffusion_step_embed_dim": 8}
    with pytest.raises(ValueError, match="another run_dir or the matching student_unet"):
        distill(teacher, dataset, tmp_path / "d", student_unet=narrow, **options)
