"""Imported Diffusion Policy checkpoints in the harness: image PushT rollouts, eval CLI, distillation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from helpers.paths import DP_FIXTURES, needs_shared

import policy_accel
from policy_accel.cli.main import main
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.formats.diffusion_policy.writer import write_dp_checkpoint
from policy_accel.paths import config_dir

FIXTURES = DP_FIXTURES
needs_fixtures = needs_shared(FIXTURES / "hybrid_image_cnn.ckpt")


def env_cfg(name: str) -> dict:
    return yaml.safe_load((config_dir() / "env" / f"{name}.yaml").read_text())


@needs_fixtures
def test_image_checkpoint_rolls_out_on_pusht_image_and_refuses_unmapped_envs():
    policy = policy_accel.load(FIXTURES / "hybrid_image_cnn.ckpt")
    result = evaluate_policy(
        policy, sampler="ddim-2", env_cfg=env_cfg("pusht_image"), seeds=[100000, 100001], progress=False, max_steps=9
    )
    assert result["n_episodes"] == 2 and result["nfe_per_chunk"] == 2
    assert all(e["length"] == 9 for e in result["episodes"]) and result["latency_ms"]["n_chunks"] == 2
    with pytest.raises(ValueError, match="policy key 'image' reads env key 'image'.*obs_keys"):
        evaluate_policy(
            policy, sampler="ddim-2", env_cfg=env_cfg("pusht_pixels"), seeds=[0], progress=False, max_steps=2
        )
    with pytest.raises(ValueError, match="env=pusht_image"):
        evaluate_policy(
            policy, sampler="ddim-2", env_cfg=env_cfg("pusht_keypoints"), seeds=[0], progress=False, max_steps=2
        )


@needs_fixtures
@pytest.mark.parametrize("name,env", [("hybrid_image_cnn", "pusht_image"), ("lowdim_transformer", "pusht_keypoints")])
def test_eval_cli_runs_a_diffusion_policy_ckpt(tmp_path, capsys, name, env):
    out = tmp_path / "eval"
    main(
        [
            "eval",
            f"checkpoint={FIXTURES / f'{name}.ckpt'}",
            f"env={env}",
            "sampler=paraddim",
            "sampler.num_steps=4",
            "sampler.window=2",
            "sampler.timestep_spacing=leading",
            "n_seeds=1",
            "n_envs=1",
            "max_steps=3",
            f"output_dir={out}",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert report["sampler"] == "paraddim-4" and report["n_episodes"] == 1
    assert "paraddim-4" in capsys.readouterr().out


def test_distill_accepts_an_imported_lowdim_teacher_and_students_load_beside_it(tmp_path):
    from helpers import tiny_teacher_and_dataset  # the tiny keypoint dataset of the distill tests

    from policy_accel.data.normalizer import AffineFieldNormalizer, Normalizer
    from policy_accel.distill.progressive import distill
    from policy_accel.samplers import StudentSampler

    teacher, dataset = tiny_teacher_and_dataset()
    limits = teacher.normalizer  # DP stores the same affine map as scale/offset
    scale_offset = {}
    for name in ("obs", "action"):
        scale, offset = limits[name]._scale_offset()
        scale_offset[name] = AffineFieldNormalizer(scale, offset)
    teacher.normalizer = Normalizer(scale_offset)
    ckpt = write_dp_checkpoint(tmp_path / "teacher.ckpt", teacher, "DiffusionUnetLowdimPolicy")
    imported = policy_accel.load(ckpt)
    (path,) = distill(
        imported,
        dataset,
        tmp_path / "d",
        start_steps=4,
        final_steps=2,
        iterations=2,
        batch_size=8,
        student_unet={"down_dims": [8], "kernel_size": 3, "n_groups": 4, "diffusion_step_embed_dim": 8},
    )
    policy = policy_accel.load(ckpt, sampler={"name": "student", "checkpoint": str(path)})
    assert isinstance(policy.sampler, StudentSampler) and policy.sampler.num_steps == 2
    policy.reset(seed=0)
    assert np.isfinite(policy.select_action(np.full(20, 250.0))).all()


@needs_fixtures
@pytest.mark.parametrize("name,env", [("hybrid_image_cnn", "pusht_image"), ("lowdim_transformer", "pusht_keypoints")])
@pytest.mark.parametrize("execution", ["blocking", "async", "blend", "rtc"])
def test_a_diffusion_policy_ckpt_runs_every_execution_mode(name, env, execution):
    policy = policy_accel.load(FIXTURES / f"{name}.ckpt")
    horizon = policy.config.horizon - policy.config.first_action - policy.config.n_action_steps
    delay = min(2, horizon)
    result = evaluate_policy(
        policy, "ddim-2", env_cfg(env), [100000], progress=False, max_steps=16, execution=execution, delay=delay
    )
    assert result["execution"] == execution and result["delay_steps"] == delay
