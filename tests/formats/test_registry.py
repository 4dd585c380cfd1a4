"""The format registry: each format is detected, unknown paths fail by name, and a new format plugs in."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_policy
from helpers.lerobot import write_policy_folder

import policy_accel
import policy_accel.formats as formats
from policy_accel.data.normalizer import AffineFieldNormalizer, Normalizer
from policy_accel.formats import (
    CheckpointFormat,
    LoadedCheckpoint,
    UnrecognisedCheckpointError,
    detect_format,
    read_checkpoint,
)
from policy_accel.formats.diffusion_policy.checkpoint import DiffusionPolicyFormat
from policy_accel.formats.diffusion_policy.writer import write_dp_checkpoint
from policy_accel.formats.lerobot.checkpoint import LeRobotFormat
from policy_accel.formats.project import ProjectFormat
from policy_accel.model.checkpoint_io import CheckpointError
from policy_accel.policy.loading import load_policy, save_policy

STATE_ENV = {
    "observation.state": {"type": "STATE", "shape": [3]},
    "observation.environment_state": {"type": "ENV", "shape": [6]},
}
FORMAT_NAMES = [f.name for f in formats.FORMATS]


@pytest.fixture(scope="module")
def lerobot_folder(tmp_path_factory) -> Path:
    return write_policy_folder(
        tmp_path_factory.mktemp("lerobot") / "state",
        STATE_ENV,
        action_dim=4,
        horizon=8,
        n_obs_steps=3,
        n_action_steps=4,
    )


def _dp_ckpt(path: Path) -> Path:
    """A small Diffusion Policy .ckpt (DP's normaliser is affine, so the tiny policy gets one)."""
    policy = tiny_policy()
    ones, zeros = torch.ones, torch.zeros
    policy.normalizer = Normalizer(
        {"obs": AffineFieldNormalizer(ones(20) / 256, -ones(20)), "action": AffineFieldNormalizer(ones(2), zeros(2))}
    )
    return write_dp_checkpoint(path, policy, "DiffusionUnetLowdimPolicy")


def _same_chunks(a, b, obs) -> None:
    shape = (a.sampler.solver.num_steps + 1, 3, a.config.horizon, a.config.action_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.predict_action_chunk(obs, noise=noise), b.predict_action_chunk(obs, noise=noise))


def test_each_format_is_detected(tmp_path, lerobot_folder):
    project = save_policy(tiny_policy(), tmp_path / "p.safetensors")
    no_suffix = tmp_path / "p.weights"
    no_suffix.write_bytes(project.read_bytes())  # recognised by its safetensors header
    ckpt = _dp_ckpt(tmp_path / "dp.ckpt")
    assert isinstance(detect_format(project), ProjectFormat)
    assert isinstance(detect_format(no_suffix), ProjectFormat)
    assert isinstance(detect_format(ckpt), DiffusionPolicyFormat)
    assert isinstance(detect_format(lerobot_folder), LeRobotFormat)

    assert read_checkpoint(project).native_sampler == "ddpm"
    assert read_checkpoint(ckpt).native_sampler == {"name": "ddpm", "num_steps": 100}
    assert read_checkpoint(lerobot_folder).format == "LeRobot folder"
    assert load_policy(no_suffix).sampler.solver.num_steps == load_policy(project).sampler.solver.num_steps


def test_native_sampler_is_the_default_and_a_given_one_replaces_it(tmp_path):
    ckpt = _dp_ckpt(tmp_path / "dp.ckpt")
    assert load_policy(ckpt).sampler.solver.num_steps == 100
    assert load_policy(ckpt, sampler="ddim-4").sampler.solver.num_steps == 4


def test_a_missing_path_names_it_and_the_formats(tmp_path):
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(FileNotFoundError) as info:
        policy_accel.load(missing)
    assert "nowhere.ckpt" in str(info.value)
    assert all(name in str(info.value) for name in FORMAT_NAMES)


def test_an_unrecognised_file_names_it_and_the_formats_tried(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint\n")
    with pytest.raises(UnrecognisedCheckpointError) as info:
        load_policy(notes)
    assert isinstance(info.value, CheckpointError)  # the CLI's error handling catches it
    assert "notes.txt" in str(info.value) and all(name in str(info.value) for name in FORMAT_NAMES)


class ToyFormat(CheckpointFormat):
    """A file ``TOY <seed>``: the tiny policy of that seed, with DDIM-2 as its own inference."""

    name = "toy"

    def recognises(self, path: Path) -> bool:
        return path.is_file() and path.read_bytes().startswith(b"TOY ")

    def read(self, path: Path) -> LoadedCheckpoint:
        policy = tiny_policy(seed=int(path.read_text().split()[1]))
        return LoadedCheckpoint(
            config=policy.config,
            state_dict=policy.state_dict(),
            native_sampler={"name": "ddim", "num_steps": 2},
            source=f"toy checkpoint '{path}'",
        )


def test_a_registered_format_loads_through_policy_accel_load(tmp_path, monkeypatch):
    toy = tmp_path / "policy.toy"
    toy.write_text("TOY 3")
    with pytest.raises(UnrecognisedCheckpointError, match=r"policy\.toy"):
        policy_accel.load(toy)
    monkeypatch.setattr(formats, "FORMATS", list(formats.FORMATS))  # undone after the test
    formats.register_format(ToyFormat())
    assert isinstance(detect_format(toy), ToyFormat)
    policy = policy_accel.load(toy)
    assert read_checkpoint(toy).format == "toy"
    assert policy.sampler.solver.num_steps == 2 and not policy.training
    obs = torch.rand(3, 2, 20) * 512
    _same_chunks(policy, tiny_policy(sampler={"name": "ddim", "num_steps": 2}, seed=3), obs)
    assert policy_accel.load(toy, sampler="ddim-5").sampler.solver.num_steps == 5


def test_a_registered_format_whose_weights_do_not_fit_is_named(tmp_path, monkeypatch):
    class Broken(ToyFormat):
        name = "broken toy"

        def read(self, path: Path) -> LoadedCheckpoint:
            loaded = super().read(path)
            loaded.state_dict.pop("model.final_conv.1.bias")
            return loaded

    toy = tmp_path / "policy.toy"
    toy.write_text("TOY 0")
    monkeypatch.setattr(formats, "FORMATS", [Broken()])
    with pytest.raises(CheckpointError, match=r"toy checkpoint '.*policy\.toy'.*missing keys"):
        load_policy(toy)


def test_model_layer_names_no_format():
    """model/ must not reach formats/ (a layer above it), not even by a module name held in a string."""
    from policy_accel.model import builders

    tree = ast.parse(inspect.getsource(builders))
    owners = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    docstrings = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, owners) and ast.get_docstring(n)}
    strings = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]
    names = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    ]
    assert not [v for v in strings if "policy_accel.formats" in v]
    assert not [m for m in names if m and (m.startswith("policy_accel.formats") or m == "importlib")]


def test_a_lerobot_config_builds_its_encoder_in_a_fresh_interpreter(lerobot_folder):
    """Importing the policy module alone registers the formats' encoders: a saved LeRobot copy rebuilds."""
    config = json.dumps(load_policy(lerobot_folder).config.to_dict())
    script = (
        "import json, sys\n"
        "from policy_accel.policy.diffusion_policy import DiffusionPolicy\n"
        "from policy_accel.model.config import DiffusionPolicyConfig\n"
        "policy = DiffusionPolicy(DiffusionPolicyConfig.from_dict(json.loads(sys.stdin.read())))\n"
        "print(type(policy.obs_encoder).__name__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input=config, capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "LeRobotObsEncoder"
