"""LeRobot PushT policies run in the project's rollout harness and CLI under their own feature names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers.lerobot import write_policy_folder

import policy_accel
from policy_accel.eval.families.lerobot_pusht import pusht_plan
from policy_accel.eval.rollout import evaluate_policy

ENV = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    inputs = {
        "observation.image": {"type": "VISUAL", "shape": [3, 48, 48]},
        "observation.state": {"type": "STATE", "shape": [2]},
    }
    return write_policy_folder(tmp_path_factory.mktemp("lerobot") / "img", inputs, crop_shape=[40, 40])


@pytest.fixture(scope="module")
def keypoint_folder(tmp_path_factory) -> Path:
    inputs = {
        "observation.state": {"type": "STATE", "shape": [2]},
        "observation.environment_state": {"type": "ENV", "shape": [18]},
    }
    return write_policy_folder(tmp_path_factory.mktemp("lerobot") / "kp", inputs)


def test_keypoint_observations_split_into_features():
    plan = pusht_plan({"observation.state": {"shape": [2]}, "observation.environment_state": {"shape": [18]}})
    obs = np.arange(40, dtype=np.float64).reshape(2, 20)  # 9 keypoints (x, y) then the agent's x, y
    mapped = plan.adapt(obs)
    assert plan.obs_type == "keypoints"
    assert np.array_equal(mapped["observation.environment_state"], obs[:, :18])
    assert np.array_equal(mapped["observation.state"], obs[:, 18:])


def test_image_observations_at_the_policy_size():
    plan = pusht_plan({"observation.image": {"shape": [3, 64, 64]}, "observation.state": {"shape": [2]}})
    assert plan.obs_type == "pixels_agent_pos" and plan.env_kwargs == {"obs_size": 64}
    pixels = np.full((2, 64, 64, 3), 255, dtype=np.uint8)
    mapped = plan.adapt({"pixels": pixels, "agent_pos": np.ones((2, 2))})
    assert mapped["observation.image"].shape == (2, 3, 64, 64) and mapped["observation.image"].max() == 1.0


def test_features_no_env_provides_are_listed():
    shapes = {
        "observation.images.wrist": {"shape": [3, 64, 64]},
        "observation.state": {"shape": [7]},
        "observation.image": {"shape": [3, 64, 48]},
    }
    with pytest.raises(ValueError) as info:
        pusht_plan(shapes)
    message = str(info.value)
    assert all(name in message for name in shapes) and "PushT provides" in message


@pytest.mark.parametrize("which", ["image_folder", "keypoint_folder"])
def test_evaluate_policy_runs_a_lerobot_folder(which, request):
    policy = policy_accel.load(request.getfixturevalue(which), sampler="ddim-2")
    result = evaluate_policy(
        policy, sampler=None, env_cfg=ENV, seeds=[100000, 100001], n_envs=2, progress=False, max_steps=12
    )
    assert result["n_episodes"] == 2 and result["latency_ms"]["n_chunks"] >= 2
    assert result["obs_type"] == ("pixels_agent_pos" if which == "image_folder" else "keypoints")


def test_eval_command_on_a_folder(keypoint_folder, tmp_path, capsys):
    from policy_accel.cli.main import main

    out = tmp_path / "eval"
    main(
        [
            "eval",
            f"checkpoint={keypoint_folder}",
            "sampler=ddim-2",
            "n_seeds=1",
            "n_envs=1",
            "max_steps=5",
            f"output_dir={out}",
        ]
    )
    assert (out / "report.json").is_file() and "ddim-2" in capsys.readouterr().out


def test_eval_command_lists_missing_features(tmp_path):
    from policy_accel.cli.main import main

    inputs = {
        "observation.state": {"type": "STATE", "shape": [7]},
        "observation.environment_state": {"type": "ENV", "shape": [18]},
    }
    folder = write_policy_folder(tmp_path / "arm", inputs)
    with pytest.raises(SystemExit, match=r"observation\.state \(7,\)"):
        main(["eval", f"checkpoint={folder}", "n_seeds=1", f"output_dir={tmp_path / 'out'}"])


def test_bench_command_skips_students_of_another_teacher(keypoint_folder, tmp_path, capsys):
    from policy_accel.cli.main import main
    from policy_accel.paths import project_path

    student = project_path("checkpoints/pusht_keypoints_student_4step.safetensors")
    out = tmp_path / "bench"
    main(
        [
            "bench",
            f"checkpoint={keypoint_folder}",
            "n_seeds=1",
            "n_envs=1",
            "max_steps=3",
            f"output_dir={out}",
            f"samplers=[ddim-2,{{name: paraddim, num_steps: 4, window: 2}},{{name: student, checkpoint: {student}}}]",
            "compare=[]",
        ]
    )
    printed = capsys.readouterr().out
    assert "| ddim-2 |" in printed and "| paraddim-4 |" in printed
    assert "skipping sampler" in printed and "does not fit this policy" in printed


@pytest.mark.parametrize("which", ["image_folder", "keypoint_folder"])
@pytest.mark.parametrize("execution", ["blocking", "async", "blend", "rtc"])
def test_a_lerobot_folder_runs_every_execution_mode(which, execution, request):
    policy = policy_accel.load(request.getfixturevalue(which), sampler="ddim-2")
    result = evaluate_policy(
        policy, None, ENV, [100000, 100001], n_envs=2, progress=False, max_steps=20, execution=execution, delay=2
    )
    assert result["execution"] == execution and result["delay_steps"] == 2
    assert result["smoothness"]["switch"]["n"] >= 2
