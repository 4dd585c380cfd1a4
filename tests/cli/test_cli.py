"""The command line: closed configs, every bad value refused before work starts, outputs checked up
front, --help generated from the configs, and an installed wheel that runs from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import tiny_policy
from helpers.paths import REPO

import policy_accel
from policy_accel.cli.hydra_config import load_config
from policy_accel.cli.main import COMMANDS, main
from policy_accel.eval.report import write_report
from policy_accel.policy.loading import save_policy


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_policy(tiny_policy(), tmp_path / "tiny.safetensors")


@pytest.fixture
def no_rollouts(monkeypatch: pytest.MonkeyPatch) -> list:
    """Fails the test if a rollout starts: bad options must be refused before any work."""
    import policy_accel.eval.bench as bench
    import policy_accel.eval.rollout as rollout

    started: list = []

    def forbidden(*args, **kwargs):
        started.append(1)
        raise AssertionError("work started despite a bad option")

    monkeypatch.setattr(rollout, "evaluate_policy", forbidden)
    monkeypatch.setattr(bench, "run_benchmark", forbidden)
    return started


@pytest.mark.parametrize(
    "command, override, match",
    [
        ("eval", "sampler=paraddpm sampler.tolerance=inf", "tolerance"),
        ("eval", "sampler=paraddpm sampler.deadline_s=inf", "deadline_s"),
        ("eval", "warm_start=maybe", "warm_start must be true or false"),
        ("eval", "threads=0", "threads must be an integer >= 1"),
        ("eval", "n_seeds=abc", "n_seeds must be an integer >= 1"),
        ("eval", "seed_start=-5", "seed_start must be an integer >= 0"),
        ("bench", "threads=0", "threads must be an integer >= 1"),
        ("bench", "n_seeds=abc", "n_seeds must be an integer >= 1"),
        ("bench", "seed_start=-5", "seed_start must be an integer >= 0"),
        ("bench", "n_envs=0", "n_envs must be an integer >= 1"),
    ],
)
def test_bad_values_are_clear_errors_before_any_work(command, override, match, checkpoint, tmp_path, no_rollouts):
    args = [f"checkpoint={checkpoint}", f"output_dir={tmp_path / 'out'}", *override.split()]
    with pytest.raises(SystemExit, match=match):
        main([command, *args])
    assert no_rollouts == []


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_output_dir_that_cannot_be_written_fails_before_the_run(command, checkpoint, tmp_path, no_rollouts):
    a_file = tmp_path / "report.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit, match="is a file, not a folder"):
        main([command, f"checkpoint={checkpoint}", f"output_dir={a_file}"])
    with pytest.raises(SystemExit, match="cannot write to output_dir"):
        main([command, f"checkpoint={checkpoint}", f"output_dir={a_file / 'sub'}"])
    assert no_rollouts == []


def test_report_with_non_finite_values_is_still_written_as_valid_json(tmp_path):
    result = {
        "sampler": "x",
        "label": "x",
        "speedup": float("inf"),
        "error": float("nan"),
        "nested": [1.0, -float("inf")],
    }
    json_path, _ = write_report(result, tmp_path)
    data = json.loads(json_path.read_text())  # strict JSON: no NaN/Infinity tokens
    assert data["speedup"] is None and data["error"] is None and data["nested"] == [1.0, None]


def test_plus_key_for_a_key_no_config_has_is_an_error():
    with pytest.raises(SystemExit, match="typo"):
        load_config("eval", ["+typo=1"])
    with pytest.raises(SystemExit, match="typo"):
        load_config("eval", ["++sampler.typo=1"])
    assert load_config("eval", ["+n_seeds=3"]).n_seeds == 3  # an existing key: a plain override


def test_config_paths_resolve_against_the_project_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "eval.yaml").write_text("checkpoint: mine.safetensors\n")  # a user's own ./configs
    cfg = load_config("eval", [])
    assert Path(cfg.checkpoint) == REPO / "checkpoints" / "pusht_keypoints_teacher.safetensors"
    assert Path(cfg.checkpoint).is_file()
    student = load_config("eval", ["sampler=student-2"]).sampler.checkpoint
    assert Path(student) == REPO / "checkpoints" / "pusht_keypoints_student_2step.safetensors"
    policy = policy_accel.load("checkpoints/pusht_keypoints_teacher.safetensors")  # shipped file, any cwd
    assert policy.config.obs_dim == 20


def test_user_paths_on_the_command_line_stay_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("eval", ["checkpoint=mine.safetensors"]).checkpoint == "mine.safetensors"


@pytest.mark.parametrize("command", ["eval", "bench", "distill"])
def test_each_env_brings_its_shipped_checkpoints_and_the_user_overrides_them(command):
    key = "teacher" if command == "distill" else "checkpoint"
    for env, prefix in [("pusht_keypoints", "pusht_keypoints"), ("metaworld_mt10", "metaworld_mt10")]:
        cfg = load_config(command, [f"env={env}"])
        assert Path(cfg[key]) == REPO / "checkpoints" / f"{prefix}_teacher.safetensors"
        assert Path(cfg[key]).is_file()
    assert load_config(command, ["env=metaworld_mt10", f"{key}=mine.safetensors"])[key] == "mine.safetensors"


def test_the_metaworld_bench_rows_are_its_own_shipped_students():
    cfg = load_config("bench", ["env=metaworld_mt10"])
    students = [Path(s["checkpoint"]) for s in cfg.samplers if s["name"] == "student"]
    assert students and all(p.is_file() and p.name.startswith("metaworld_mt10_student_") for p in students)
    assert cfg.samplers[0] == {"name": "ddpm", "num_steps": 100}  # the baseline row
    assert load_config("bench", []).n_seeds == 20  # PushT's own settings are untouched by Meta-World's


def test_an_env_without_a_shipped_checkpoint_asks_for_one_by_name():
    with pytest.raises(SystemExit, match="no value for checkpoint.*checkpoint=PATH"):
        load_config("eval", ["env=pusht_image"])
    assert load_config("eval", ["env=pusht_image", "checkpoint=mine.ckpt"]).checkpoint == "mine.ckpt"


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_answers_help(command, flag, capsys):
    try:
        main([command, flag])
    except SystemExit as exc:  # argparse commands exit 0 after printing their help
        assert exc.code in (0, None)
    out = capsys.readouterr().out
    assert "usage" in out.lower() and command in out


def test_help_is_generated_from_the_config(capsys):
    main(["eval", "--help"])
    out = capsys.readouterr().out
    for key, default in (("n_seeds", "100"), ("seed_start", "100000"), ("threads", "null"), ("warm_start", "false")):
        line = next(line for line in out.splitlines() if line.strip().startswith(key + " "))
        assert line.split()[-1] == default
    assert "Diffusion Policy's test seeds start here" in out and "sampler=ddpm" in out and "paraddpm" in out


def test_version(capsys):
    main(["--version"])
    assert capsys.readouterr().out.strip() == f"policy-accel {policy_accel.__version__}"


def test_wheel_install_runs_eval_from_another_directory(tmp_path):
    """A non-editable install: one import name, configs and checkpoints inside it, eval from anywhere."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    wheel = next(wheels.glob("policy_accel-*.whl"))
    top_level = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"policy_accel"}  # no 'envs' in site-packages
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "configs").mkdir(parents=True)
    (elsewhere / "configs" / "eval.yaml").write_text("bogus: true\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("POLICY_ACCEL_CONFIGS", None)
    code = (
        "import sys, policy_accel, gymnasium as gym; from policy_accel.cli.main import main; "
        "assert policy_accel.__file__.startswith(sys.argv[1]), policy_accel.__file__; "
        "gym.spec('policy_accel/PushT-v0'); "
        "main(['eval', 'sampler=ddim-2', 'n_seeds=1', 'n_envs=1', 'max_steps=8', 'output_dir=out', 'threads=1'])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(site)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((elsewhere / "out" / "report.json").read_text())
    assert report["n_episodes"] == 1 and str(site) in report["checkpoint"]


def test_latency_command_measures_each_thread_count_alone_and_under_load(checkpoint, tmp_path, capsys):
    out = tmp_path / "latency"
    main(
        [
            "latency",
            f"checkpoint={checkpoint}",
            "sampler=ddim-2",
            "thread_counts=[1]",
            "chunks=3",
            "competitors=1",
            f"output_dir={out}",
        ]
    )
    rows = json.loads((out / "latency.json").read_text())["rows"]
    assert [(r["threads"], r["competing_processes"]) for r in rows] == [(1, 0), (1, 1)]
    assert all(r["n_chunks"] == 3 and 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"] for r in rows)
    assert "| ddim-2 | 1 | 1 |" in capsys.readouterr().out
    # The competitor really ran while the loaded chunks were timed: it counts its busy loops.
    assert "competitor_loops" not in rows[0] and rows[1]["competitor_loops"] > 0
    with pytest.raises(SystemExit, match="thread_counts"):
        main(["latency", f"checkpoint={checkpoint}", "thread_counts=[0]", f"output_dir={out}"])
