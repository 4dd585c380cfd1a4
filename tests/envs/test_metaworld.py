"""Meta-World MT10: seeding, expert demo recording, obs/action plumbing, training data, eval and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import zarr
from helpers import TINY_UNET, tiny_policy

import policy_accel  # noqa: F401  (registers the gymnasium ids)
from policy_accel.cli.main import main
from policy_accel.data.metaworld_dataset import MetaWorldDataset
from policy_accel.data.normalizer import Normalizer
from policy_accel.data.replay_buffer import ReplayBuffer, ReplayBufferError
from policy_accel.envs.metaworld import MT10_TASKS, MetaWorldEnv, env_id
from policy_accel.eval.families.metaworld_demos import (
    TEST_SEED_START,
    check_training_seeds,
    expert_for,
    record_demos,
    run_expert_episode,
    stats_path,
)
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.model.config import DiffusionPolicyConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import load_policy, save_policy

pytestmark = pytest.mark.filterwarnings("ignore:Constant.*may be too high")


def tiny_metaworld_policy(sampler: str = "ddim-2") -> DiffusionPolicy:
    """Random-weight 2-level U-Net on the 49-number obs, normaliser fitted on plausible ranges."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    normalizer = Normalizer.fit({"obs": rng.uniform(-1, 1, (64, 49)), "action": rng.uniform(-1, 1, (64, 4))})
    config = DiffusionPolicyConfig(obs_type="metaworld_state_task", obs_dim=49, action_dim=4, unet=TINY_UNET)
    return DiffusionPolicy(config, normalizer, sampler=sampler).eval()


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """Two fast tasks, 3 noisy episodes each, from a small recording."""
    path = tmp_path_factory.mktemp("demos") / "mw.zarr"
    record_demos(["reach", "drawer-close"], 3, path, seed_start=10, action_noise=0.2, clean_episodes=2, progress=False)
    return path


# ------------------------------------------------------------------ seeding
def test_seed_fixes_the_initial_state_of_every_task():
    global_state = np.random.get_state()[1].copy()
    for task in MT10_TASKS:
        env = MetaWorldEnv(task)
        a, variation = env.reset(seed=7)[0], env.variation
        env.reset(seed=8)
        assert np.array_equal(a, env.reset(seed=7)[0]), task
        assert np.array_equal(variation, env.variation), task
        env.reset(seed=9)
        assert not np.array_equal(variation, env.variation), task
        env.close()
    fresh = MetaWorldEnv("pick-place")  # a new env (another process, machine) from the same seed
    first = MetaWorldEnv("pick-place")
    assert np.array_equal(first.reset(seed=11)[0], fresh.reset(seed=11)[0])
    assert np.array_equal(np.random.get_state()[1], global_state), "Meta-World touched numpy's global RNG"


def test_same_seed_gives_the_identical_expert_episode():
    runs = []
    for _ in range(2):
        env = MetaWorldEnv("push")
        runs.append(run_expert_episode(env, expert_for("push"), 3, 0.1, np.random.default_rng(5), settle_steps=2))
        env.close()
    assert runs[0]["success"]
    for key in ("state", "action", "executed_action"):
        assert np.array_equal(runs[0][key], runs[1][key]), key


def test_reset_without_seed_continues_the_seeded_sequence():
    env_a, env_b = MetaWorldEnv("reach"), MetaWorldEnv("reach")
    env_a.reset(seed=4)
    env_b.reset(seed=4)
    assert np.array_equal(env_a.reset()[0], env_b.reset()[0])


# ------------------------------------------------------------------ plumbing
def test_observation_action_and_success_plumbing():
    env = gym.make(env_id("drawer-close"))
    obs, info = env.reset(seed=1)
    assert obs.shape == (49,) and obs.dtype == np.float32
    assert np.array_equal(obs[39:], np.eye(10, dtype=np.float32)[MT10_TASKS.index("drawer-close")])
    assert info["task"] == "drawer-close" and info["success"] is False
    assert env.action_space.shape == (4,) and env.spec.max_episode_steps == 500
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, dtype=np.float32))
    assert isinstance(info["success"], bool) and not terminated and not truncated
    with pytest.raises(ValueError, match="4 numbers"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([0, np.nan, 0, 0]))
    state_only = gym.make("policy_accel/MetaWorld-v0", task="push", obs_type="metaworld_state")
    assert state_only.reset(seed=1)[0].shape == (39,)
    vec = gym.vector.SyncVectorEnv(
        [lambda t=t: gym.make("policy_accel/MetaWorld-v0", task=t) for t in ("reach", "window-open")]
    )
    batch, _ = vec.reset(seed=[1, 2])
    assert batch.shape == (2, 49)
    vec.close()


def test_unknown_task_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown Meta-World task 'pushh'.*reach"):
        gym.make("policy_accel/MetaWorld-v0", task="pushh")
    with pytest.raises(SystemExit, match="unknown Meta-World task 'nosuch'"):
        main(["record-demos", "tasks=[nosuch]", f"output={tmp_path / 'x.zarr'}"])
    with pytest.raises(SystemExit, match="unknown Meta-World task 'nosuch'"):
        main(
            [
                "eval",
                f"checkpoint={save_policy(tiny_metaworld_policy(), tmp_path / 'p.safetensors')}",
                "env=metaworld",
                "env.task=nosuch",
                "n_seeds=1",
                f"output_dir={tmp_path / 'e'}",
            ]
        )


# ------------------------------------------------------------------ recorder
def test_recorder_writes_diffusion_policy_layout(demos):
    root = zarr.open_group(str(demos), mode="r")
    assert set(root["data"].keys()) == {"state", "action", "executed_action", "task_id"}
    ends = root["meta/episode_ends"][:]
    seeds, task_ids = root["meta/episode_seeds"][:], root["meta/episode_task_ids"][:]
    assert len(ends) == len(seeds) == 6 and ends[-1] == root["data/state"].shape[0]
    assert root["data/state"].shape[1:] == (39,) and root["data/action"].shape[1:] == (4,)
    starts = np.concatenate([[0], ends[:-1]])
    for start, end, task_id in zip(starts, ends, task_ids):
        assert np.all(root["data/task_id"][start:end] == task_id)
    assert sorted(set(task_ids)) == [MT10_TASKS.index("reach"), MT10_TASKS.index("drawer-close")]
    assert seeds.max() < TEST_SEED_START and seeds.min() >= 10
    # noise applied to the executed action only; the label is the clean expert action
    executed, clean = root["data/executed_action"][:], root["data/action"][:]
    assert np.abs(executed - clean).mean() > 0.05
    assert np.all(np.abs(clean) <= 1.0)
    stats = json.loads(stats_path(demos).read_text())
    assert stats["tasks"]["reach"]["kept_episodes"] == 3 and stats["tasks"]["reach"]["clean_attempts"] == 2
    assert ReplayBuffer.from_zarr(demos).n_episodes == 6


def test_cli_record_demos(tmp_path, capsys):
    out = tmp_path / "demos" / "reach.zarr"
    args = [
        "record-demos",
        "tasks=[reach-v3]",
        "episodes_per_task=2",
        "clean_episodes=1",
        f"output={out}",
        "progress=false",
    ]
    main(args)
    printed = capsys.readouterr().out
    assert "| reach | 1.00 (2/2) | 1.00 (1) | 2 |" in printed
    assert json.loads(stats_path(out).read_text())["n_episodes"] == 2
    with pytest.raises(SystemExit, match="exists; pass overwrite=true"):
        main(args)
    main(args + ["overwrite=true", "action_noise=0.0"])
    root = zarr.open_group(str(out), mode="r")
    assert np.array_equal(root["data/action"][:], root["data/executed_action"][:])  # no noise: executed = label


def test_recorder_drops_failed_episodes(tmp_path, monkeypatch):
    import policy_accel.eval.families.metaworld_demos as demos_module

    class Idle:
        def get_action(self, obs):
            return np.zeros(4)

    real = demos_module.run_expert_episode

    def odd_seeds_fail(env, expert, seed, *args, **kwargs):
        return real(env, Idle() if seed % 2 else expert, seed, *args, max_steps=30 if seed % 2 else 500, **kwargs)

    monkeypatch.setattr(demos_module, "run_expert_episode", odd_seeds_fail)
    summary = record_demos(["reach"], 2, tmp_path / "half.zarr", seed_start=0, progress=False)
    assert summary["tasks"]["reach"]["failed_seeds"] == [1] and summary["tasks"]["reach"]["success_rate"] == 2 / 3
    assert list(zarr.open_group(str(tmp_path / "half.zarr"), mode="r")["meta/episode_seeds"][:]) == [0, 2]
    monkeypatch.setattr(demos_module, "run_expert_episode", real)
    monkeypatch.setattr(demos_module, "expert_for", lambda task: Idle())
    with pytest.raises(RuntimeError, match="no episode"):
        record_demos(["drawer-open"], 1, tmp_path / "none.zarr", max_attempts_per_task=2, progress=False)
    assert not (tmp_path / "none.zarr").exists()


def test_recorder_refuses_test_seeds(tmp_path):
    with pytest.raises(ValueError, match="test seeds"):
        check_training_seeds(TEST_SEED_START - 5, 10)
    with pytest.raises(SystemExit, match="test seeds"):
        main(
            [
                "record-demos",
                "tasks=[reach]",
                "episodes_per_task=3",
                f"seed_start={TEST_SEED_START}",
                f"output={tmp_path / 'x.zarr'}",
                "progress=false",
            ]
        )


# ------------------------------------------------------------------ training data
def test_dataset_appends_the_one_hot_task(demos):
    data = MetaWorldDataset(demos, horizon=16, n_obs_steps=2, n_action_steps=8, val_ratio=0.0)
    assert data.obs_dim == 49 and data.action_dim == 4
    item = data[0]
    assert item["obs"].shape == (16, 49) and item["action"].shape == (16, 4)
    assert float(item["obs"][:, 39:].sum(-1).min()) == 1.0
    only_reach = MetaWorldDataset(demos, obs_type="metaworld_state", tasks=["reach"], val_ratio=0.0)
    assert only_reach.obs_dim == 39 and only_reach.episode_mask.sum() == 3
    with pytest.raises(ValueError, match="several tasks"):
        MetaWorldDataset(demos, obs_type="metaworld_state", val_ratio=0.0)


def test_zarr_without_task_ids_is_a_clear_error(demos, tmp_path):
    full = ReplayBuffer.from_zarr(demos, keys=["state", "action"])
    path = tmp_path / "no_task.zarr"
    full.save_zarr(path)
    with pytest.raises(ReplayBufferError, match="no 'data/task_id'"):
        MetaWorldDataset(path)
    assert MetaWorldDataset(path, obs_type="metaworld_state", val_ratio=0.0).obs_dim == 39
    with pytest.raises(SystemExit, match="dataset.zarr_path: .*no 'data/task_id'"):
        main(
            [
                "train",
                "env=metaworld_mt10",
                f"dataset.zarr_path={path}",
                "model=unet_tiny",
                f"run_dir={tmp_path / 'run'}",
            ]
        )


def test_train_on_metaworld_demos_with_a_metaworld_rollout(demos, tmp_path):
    from policy_accel.cli.hydra_config import load_config
    from policy_accel.train.trainer import train

    run_dir = tmp_path / "run"
    cfg = load_config(
        "train",
        [
            "env=metaworld",
            "env.task=reach",
            "env.max_episode_steps=24",
            f"dataset.zarr_path={demos}",
            "model=unet_tiny",
            f"run_dir={run_dir}",
            "train.batch_size=16",
            "train.num_steps=4",
            "train.log_every=2",
            "train.val_every=0",
            "train.ckpt_every=4",
            "train.rollout_every=4",
            "train.rollout_n_seeds=1",
            "train.rollout_sampler=ddim-1",
            "dataset.val_ratio=0.4",
        ],
    )
    policy = load_policy(train(cfg))
    assert policy.config.obs_type == "metaworld_state_task" and policy.config.obs_dim == 49
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    rollout = [r for r in records if r["event"] == "rollout"]
    assert [r["step"] for r in rollout] == [4]
    # the logged score is the evaluation of the exported step-4 EMA policy on the configured seed, episode by episode
    again = evaluate_policy(policy, "ddim-1", cfg.env, seeds=[cfg.train.rollout_seed_start], progress=False)
    assert again["n_episodes"] == 1 and again["episodes"][0]["length"] <= 24
    assert rollout[0]["success_rate"] == again["success_rate"] == float(again["episodes"][0]["success"])
    assert rollout[0]["mean_max_reward"] == again["mean_max_reward"] == again["episodes"][0]["max_reward"] > 0


# ------------------------------------------------------------------ eval / bench
def test_short_eval_reports_success_per_task():
    policy = tiny_metaworld_policy()
    result = evaluate_policy(
        policy,
        "ddim-2",
        {"tasks": ["reach", "push"], "obs_type": "metaworld_state_task"},
        seeds=[100000, 100001],
        n_envs=4,
        progress=False,
        max_steps=12,
    )
    assert result["n_episodes"] == 4 and set(result["per_task"]) == {"reach", "push"}
    assert [e["task"] for e in result["episodes"]] == ["reach", "reach", "push", "push"]
    assert all(e["length"] == 12 or e["success"] for e in result["episodes"])
    assert result["nfe_per_chunk"] == 2 and result["latency_ms"]["n_chunks"] >= 2
    again = evaluate_policy(
        policy,
        "ddim-2",
        {"tasks": ["reach", "push"], "obs_type": "metaworld_state_task"},
        seeds=[100000, 100001],
        n_envs=4,
        progress=False,
        max_steps=12,
    )
    assert [e["max_reward"] for e in again["episodes"]] == [e["max_reward"] for e in result["episodes"]]


def test_success_rate_is_the_mean_of_the_episodes_success_flags():
    """The shipped MT10 teacher (2 DDIM steps) solves reach on seed 100000 within 60 steps and does not close the
    drawer in them: the success flags, their per-task and overall means, and the episodes that end early."""
    from helpers.paths import CHECKPOINTS

    teacher = load_policy(CHECKPOINTS / "metaworld_mt10_teacher.safetensors")
    result = evaluate_policy(
        teacher,
        "ddim-2",
        {"tasks": ["reach", "drawer-close"], "obs_type": teacher.config.obs_type},
        seeds=[100000],
        n_envs=2,
        progress=False,
        max_steps=60,
    )
    episodes = {e["task"]: e for e in result["episodes"]}
    assert episodes["reach"]["success"] is True and episodes["reach"]["length"] < 60  # ends at its first success
    assert episodes["reach"]["max_reward"] == pytest.approx(10.0)  # Meta-World's reward for a reached goal
    assert episodes["drawer-close"]["success"] is False and episodes["drawer-close"]["length"] == 60
    assert (
        result["per_task"]["reach"]["success_rate"] == 1.0 and result["per_task"]["drawer-close"]["success_rate"] == 0.0
    )
    assert result["success_rate"] == np.mean([e["success"] for e in result["episodes"]]) == 0.5


def test_cli_eval_bench_and_profile_on_metaworld(demos, tmp_path):
    path = save_policy(tiny_metaworld_policy(), tmp_path / "mw.safetensors")
    out = tmp_path / "eval"
    main(
        [
            "eval",
            f"checkpoint={path}",
            "env=metaworld",
            "env.task=reach",
            "sampler=ddim-2",
            "n_seeds=1",
            "max_steps=8",
            f"output_dir={out}",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert set(report["per_task"]) == {"reach"} and report["seeds"] == [100000]
    assert "Success per task" in (out / "report.md").read_text()
    bench_out = tmp_path / "bench"
    main(
        [
            "bench",
            f"checkpoint={path}",
            "env=metaworld",
            "env.task=drawer-close",
            "n_seeds=1",
            "max_steps=8",
            "samplers=[{name: ddim, num_steps: 2}, {name: ddim, num_steps: 1}]",
            "compare=null",
            f"output_dir={bench_out}",
        ]
    )
    bench = json.loads((bench_out / "report.json").read_text())
    assert [r["label"] for r in bench["results"]] == ["ddim-2", "ddim-1"]
    assert all(set(r["per_task"]) == {"drawer-close"} for r in bench["results"])
    assert "Meta-World success per task" in (bench_out / "report.md").read_text()
    main(
        [
            "profile",
            f"checkpoint={path}",
            f"zarr_path={demos}",
            "n_conds=2",
            "repeats=1",
            "threads=1",
            "samplers=[{name: ddim, num_steps: 2}]",
            f"output_dir={tmp_path / 'profile'}",
        ]
    )
    assert any((tmp_path / "profile").iterdir())


def test_wrong_env_family_is_a_clear_error(tmp_path):
    pusht = save_policy(tiny_policy(), tmp_path / "pusht.safetensors")
    mw = save_policy(tiny_metaworld_policy(), tmp_path / "mw.safetensors")
    with pytest.raises(SystemExit, match="is a PushT policy.*Meta-World"):
        main(["eval", f"checkpoint={pusht}", "env=metaworld_mt10", "n_seeds=1", f"output_dir={tmp_path / 'a'}"])
    with pytest.raises(SystemExit, match="is a PushT policy"):
        main(["bench", f"checkpoint={pusht}", "env=metaworld_mt10", "n_seeds=1", f"output_dir={tmp_path / 'b'}"])
    with pytest.raises(SystemExit, match="is a Meta-World policy.*env=metaworld_mt10"):
        main(["eval", f"checkpoint={mw}", "n_seeds=1", f"output_dir={tmp_path / 'c'}"])
    with pytest.raises(ValueError, match="obs_type"):
        evaluate_policy(
            tiny_policy(),
            None,
            {"task": "reach", "obs_type": "metaworld_state_task"},
            [100000],
            progress=False,
            max_steps=2,
        )


def test_cli_distill_a_metaworld_teacher(demos, tmp_path):
    teacher = save_policy(tiny_metaworld_policy(), tmp_path / "teacher.safetensors")
    run_dir = tmp_path / "distill"
    main(
        [
            "distill",
            "env=metaworld",
            "env.task=reach",
            "env.max_episode_steps=16",
            f"teacher={teacher}",
            f"dataset.zarr_path={demos}",
            "dataset.val_ratio=0.2",
            "start_steps=2",
            "final_steps=1",
            "iterations=2",
            "first_round_iterations=2",
            "batch_size=8",
            "student_unet=null",
            "eval.n_seeds=1",
            "eval.n_envs=1",
            "threads=1",
            f"run_dir={run_dir}",
        ]
    )
    student = sorted(run_dir.rglob("*.safetensors"))
    assert student, "no student written"
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    (done,) = [r for r in records if r["event"] == "round_done"]
    assert done["eval_seeds"] == 1 and Path(done["checkpoint"]) == student[0]
    # the logged score is the student's evaluation (as the teacher's sampler) on the first test seed, episode by episode
    again = evaluate_policy(
        load_policy(teacher),
        {"name": "student", "checkpoint": done["checkpoint"]},
        {"task": "reach", "obs_type": "metaworld_state_task", "max_episode_steps": 16},
        seeds=[TEST_SEED_START],
        n_envs=1,
        progress=False,
    )
    assert again["n_episodes"] == 1 and again["episodes"][0]["length"] <= 16
    assert done["success_rate"] == again["success_rate"] == float(again["episodes"][0]["success"])
    assert done["mean_max_reward"] == again["mean_max_reward"] == again["episodes"][0]["max_reward"] > 0
    pusht_teacher = save_policy(tiny_policy(), tmp_path / "pusht.safetensors")
    with pytest.raises(SystemExit, match="teacher .*is a PushT policy"):
        main(
            [
                "distill",
                "env=metaworld_mt10",
                f"teacher={pusht_teacher}",
                f"dataset.zarr_path={demos}",
                f"run_dir={tmp_path / 'x'}",
            ]
        )


# ------------------------------------------------------------------ the shipped MT10 models
def test_shipped_teacher_and_student_solve_reach_through_the_default_bench(tmp_path):
    """`policy-accel bench env=metaworld_mt10` on a fresh install: the env's own teacher and students
    (no checkpoint= or samplers= needed), here trimmed to one task, one seed and two rows."""
    out = tmp_path / "bench"
    main(
        [
            "bench",
            "env=metaworld_mt10",
            "env.tasks=[reach]",
            "n_seeds=1",
            "max_steps=150",
            "threads=1",
            "samplers=[{name: ddim, num_steps: 10}, {name: student, checkpoint: "
            "'${project:checkpoints/metaworld_mt10_student_4step.safetensors}'}]",
            "compare=null",
            f"output_dir={out}",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert report["checkpoint"].endswith("metaworld_mt10_teacher.safetensors")
    assert [r["label"] for r in report["results"]] == ["ddim-10", "student-4"]
    assert all(r["per_task"]["reach"]["success_rate"] == 1.0 for r in report["results"])
