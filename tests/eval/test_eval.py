"""Tests for seeded PushT evaluation (policy_accel.eval) and the ``eval`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from helpers import tiny_policy
from helpers.paths import REPO
from PIL import Image

from policy_accel.cli.main import main
from policy_accel.envs.pusht import PushTEnv
from policy_accel.eval.report import markdown_table, write_report
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import save_policy

ENV_CFG = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300, "render_size": 64}
SEEDS = [100000, 100001, 100002]
KEYS = {
    "sampler",
    "seeds",
    "n_episodes",
    "mean_max_reward",
    "ci95",
    "success_rate",
    "episode_length_mean",
    "episodes",
    "latency_ms",
    "per_action_ms",
    "nfe_per_chunk",
    "rounds_per_chunk",
    "batch_size",
    "machine",
    "frac_hit_deadline",
    "frac_not_converged",
}


@pytest.fixture(scope="module")
def policy() -> DiffusionPolicy:
    return tiny_policy()


@pytest.fixture(scope="module")
def result(policy: DiffusionPolicy) -> dict:
    return evaluate_policy(policy, sampler="ddim-3", env_cfg=ENV_CFG, seeds=SEEDS, progress=False, max_steps=20)


def test_result_keys_and_counts(result: dict) -> None:
    assert KEYS <= set(result)
    assert result["sampler"] == "ddim-3" and result["seeds"] == SEEDS and result["n_episodes"] == 3
    assert [e["seed"] for e in result["episodes"]] == SEEDS
    assert all(1 <= e["length"] <= 20 for e in result["episodes"])
    assert all(0.0 <= e["max_reward"] <= 1.0 for e in result["episodes"])
    assert result["mean_max_reward"] == pytest.approx(np.mean([e["max_reward"] for e in result["episodes"]]))
    assert result["ci95"] is not None and result["ci95"] >= 0
    assert result["batch_size"] == 3 and 0.0 <= result["success_rate"] <= 1.0
    json.dumps(result, allow_nan=False)  # JSON-able as promised


def test_latency_and_sampler_stats(result: dict) -> None:
    lat = result["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] and lat["mean"] > 0
    # 20 steps, 8 actions per chunk: 3 planning calls (the warm-up chunk is not counted).
    assert lat["n_chunks"] == 3 and result["n_policy_calls"] == 20
    assert 0 < result["per_action_ms"] < lat["mean"]
    assert result["nfe_per_chunk"] == 3 and result["rounds_per_chunk"] == 3
    assert result["frac_hit_deadline"] == 0 and result["frac_not_converged"] == 0
    assert {"platform", "cpu", "torch", "torch_threads"} <= set(result["machine"])


def test_same_seeds_same_rewards_and_sampler_restored(policy: DiffusionPolicy, result: dict) -> None:
    assert policy.sampler.name == "ddim-3"
    again = evaluate_policy(policy, sampler="ddim-2", env_cfg=ENV_CFG, seeds=SEEDS, progress=False, max_steps=20)
    assert again["sampler"] == "ddim-2" and again["nfe_per_chunk"] == 2
    assert policy.sampler.name == "ddim-3"  # restored
    same = evaluate_policy(policy, sampler=None, env_cfg=ENV_CFG, seeds=SEEDS, progress=False, max_steps=20)
    assert [e["max_reward"] for e in same["episodes"]] == [e["max_reward"] for e in result["episodes"]]
    assert [e["length"] for e in same["episodes"]] == [e["length"] for e in result["episodes"]]


def test_batches_and_videos(policy: DiffusionPolicy, tmp_path: Path) -> None:
    # 3 seeds in batches of 2 (the last batch has one env), and a GIF of the first episode.
    out = evaluate_policy(
        policy,
        sampler=None,
        env_cfg=ENV_CFG,
        seeds=SEEDS,
        n_envs=2,
        progress=False,
        max_steps=12,
        record_video_episodes=1,
        video_dir=tmp_path,
    )
    assert out["n_episodes"] == 3 and out["batch_sizes"] == [1, 2]
    assert all(e["length"] <= 12 for e in out["episodes"])
    assert len(out["videos"]) == 1
    with Image.open(out["videos"][0]) as gif:
        assert gif.format == "GIF" and gif.n_frames >= 2 and gif.size == (64, 64)


class GoalOnEvenSeeds(PushTEnv):
    """PushT whose even seeds start with the block on the goal, so they end after one step."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # type: ignore[override]
        if seed is not None and seed % 2 == 0:
            super().reset(seed=seed)
            return super().reset(options={"state": [30.0, 480.0, 256.0, 256.0, math.pi / 4]})
        return super().reset(seed=seed, options=options)


def test_finished_episodes_stop_counting(policy: DiffusionPolicy) -> None:
    env_id = "policy_accel_test/PushTGoalOnEven-v0"
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=GoalOnEvenSeeds)
    out = evaluate_policy(
        policy, sampler=None, env_cfg={**ENV_CFG, "id": env_id}, seeds=[4, 5], progress=False, max_steps=9
    )
    first, second = out["episodes"]
    assert (first["length"], first["max_reward"], first["success"]) == (1, 1.0, True)
    assert second["length"] == 9 and out["n_policy_calls"] == 9
    assert out["success_rate"] == 0.5 and out["episode_length_mean"] == 5.0


def test_obs_type_mismatch_is_an_error(policy: DiffusionPolicy) -> None:
    with pytest.raises(ValueError, match="obs_type"):
        evaluate_policy(
            policy, sampler=None, env_cfg={**ENV_CFG, "obs_type": "state"}, seeds=SEEDS[:1], progress=False, max_steps=2
        )


def test_write_report(result: dict, tmp_path: Path) -> None:
    json_path, md_path = write_report(result, tmp_path / "r")
    assert json.loads(json_path.read_text())["n_episodes"] == 3
    text = md_path.read_text()
    assert "| ddim-3 | 3 |" in text and "torch_threads" in text
    table = markdown_table([result, {**result, "sampler": "other", "ci95": None}])
    assert len(table.splitlines()) == 4 and "| other |" in table


def test_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = save_policy(tiny_policy(), tmp_path / "p.safetensors")
    out_dir = tmp_path / "eval"
    main(["eval", f"checkpoint={path}", "sampler=ddim-2", "n_seeds=2", "max_steps=10", f"output_dir={out_dir}"])
    report = json.loads((out_dir / "report.json").read_text())
    assert report["sampler"] == "ddim-2" and report["n_episodes"] == 2 and report["seeds"] == [100000, 100001]
    assert report["nfe_per_chunk"] == 2 and all(e["length"] <= 10 for e in report["episodes"])
    printed = capsys.readouterr().out
    assert "| ddim-2 | 2 |" in printed and str(out_dir / "report.md") in printed


def test_cli_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(SystemExit, match="checkpoint not found"):
        main(["eval", f"checkpoint={missing}", "n_seeds=1"])


def test_cli_bad_sampler(tmp_path: Path) -> None:
    path = save_policy(tiny_policy(), tmp_path / "p.safetensors")
    with pytest.raises(SystemExit, match="nosuch"):
        main(["eval", f"checkpoint={path}", "sampler=nosuch-3", "n_seeds=1", f"output_dir={tmp_path}"])
    with pytest.raises(SystemExit, match="window"):
        main(
            [
                "eval",
                f"checkpoint={path}",
                "sampler=paraddim",
                "sampler.window=0",
                "n_seeds=1",
                f"output_dir={tmp_path}",
            ]
        )


def test_cli_picard_sampler_from_config_group(tmp_path: Path) -> None:
    path = save_policy(tiny_policy(), tmp_path / "p.safetensors")
    out_dir = tmp_path / "picard"
    main(
        [
            "eval",
            f"checkpoint={path}",
            "sampler=paraddim-8",
            "sampler.window=4",
            "n_seeds=1",
            "max_steps=9",
            f"output_dir={out_dir}",
        ]
    )
    report = json.loads((out_dir / "report.json").read_text())
    assert report["sampler"] == "paraddim-8" and report["rounds_per_chunk"] <= 8


def test_cli_runs_the_shipped_students_by_step_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the config's default paths are repo-relative
    for steps in (2, 1):
        out_dir = tmp_path / f"student{steps}"
        main(["eval", f"sampler=student-{steps}", "n_seeds=1", "max_steps=9", f"output_dir={out_dir}"])
        report = json.loads((out_dir / "report.json").read_text())
        assert report["sampler"] == f"student-{steps}" and report["nfe_per_chunk"] == steps
    with pytest.raises(SystemExit, match="student_3step.safetensors.* not found|not found.*student_3step"):
        main(["eval", "sampler=student-3", "n_seeds=1", f"output_dir={tmp_path}"])
