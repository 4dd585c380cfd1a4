"""``sampler=student-k`` means the k-step student of the checkpoint in use, whatever the env (issue 24's bug:
``env=metaworld_mt10 sampler=student-1`` used to pick the PushT student)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import tiny_policy
from helpers.paths import REPO

from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.main import main
from policy_accel.policy.loading import save_policy

SHIPPED = REPO / "checkpoints"


def test_the_configured_student_is_the_env_familys() -> None:
    cfg = load_config("eval", ["env=metaworld_mt10", "sampler=student-1"])
    assert Path(cfg.sampler.checkpoint) == SHIPPED / "metaworld_mt10_student_1step.safetensors"
    assert Path(load_config("eval", ["sampler=student-2"]).sampler.checkpoint) == (
        SHIPPED / "pusht_keypoints_student_2step.safetensors"
    )


def test_metaworld_eval_runs_the_metaworld_student(tmp_path: Path) -> None:
    out = tmp_path / "mw"
    main(["eval", "env=metaworld_mt10", "sampler=student-1", "n_seeds=1", "max_steps=2", f"output_dir={out}"])
    report = json.loads((out / "report.json").read_text())
    assert report["sampler"] == "student-1" and report["nfe_per_chunk"] == 1
    assert Path(report["sampler_spec"]["checkpoint"]).name == "metaworld_mt10_student_1step.safetensors"
    assert len(report["per_task"]) == 10


def test_students_are_found_beside_the_teacher_in_use(tmp_path: Path) -> None:
    teacher = shutil.copy(SHIPPED / "pusht_keypoints_teacher.safetensors", tmp_path / "mine_teacher.safetensors")
    student = shutil.copy(
        SHIPPED / "pusht_keypoints_student_2step.safetensors", tmp_path / "mine_student_2step.safetensors"
    )
    out = tmp_path / "out"
    main(["eval", f"checkpoint={teacher}", "sampler=student-2", "n_seeds=1", "max_steps=3", f"output_dir={out}"])
    report = json.loads((out / "report.json").read_text())
    assert Path(report["sampler_spec"]["checkpoint"]) == Path(student) and report["nfe_per_chunk"] == 2
    with pytest.raises(SystemExit, match="mine_student_1step.safetensors.* not found.*sampler.checkpoint"):
        main(["eval", f"checkpoint={teacher}", "sampler=student-1", "n_seeds=1", f"output_dir={tmp_path / 'x'}"])


def test_a_checkpoint_without_students_names_sampler_checkpoint(tmp_path: Path) -> None:
    checkpoint = save_policy(tiny_policy(), tmp_path / "tiny.safetensors")
    with pytest.raises(SystemExit, match="no students are known for checkpoint .*tiny.*sampler.checkpoint=PATH"):
        main(["eval", f"checkpoint={checkpoint}", "sampler=student-2", "n_seeds=1", f"output_dir={tmp_path / 'a'}"])
    # An explicit sampler.checkpoint is used as given (here the shipped student, on a copy of its own teacher).
    teacher = shutil.copy(SHIPPED / "pusht_keypoints_teacher.safetensors", tmp_path / "renamed.safetensors")
    out = tmp_path / "b"
    given = SHIPPED / "pusht_keypoints_student_2step.safetensors"
    main(
        [
            "eval",
            f"checkpoint={teacher}",
            "sampler=student-2",
            f"sampler.checkpoint={given}",
            "n_seeds=1",
            "max_steps=3",
            f"output_dir={out}",
        ]
    )
    assert Path(json.loads((out / "report.json").read_text())["sampler_spec"]["checkpoint"]) == given
