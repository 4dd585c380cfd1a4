"""The house's own checks run with the tests, so CI enforces them: ruff (lint and format) and
the import layers (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

from helpers.paths import REPO


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    ruff = shutil.which("ruff")
    command = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_ruff_lint_is_clean():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def _check_layers():
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "scripts" / "check_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_import_layers_hold():
    result = _check_layers().check_layers()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "BROKEN" not in output and "KEPT" in output


def test_a_layer_violation_is_caught(tmp_path):
    """The contract check can fail: a model module importing the policy layer breaks it."""
    fake = tmp_path / "repo"
    shutil.copytree(REPO / "policy_accel", fake / "policy_accel", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "envs", fake / "envs", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", fake / "pyproject.toml")
    (fake / "policy_accel" / "model" / "upward.py").write_text("import policy_accel.policy.diffusion_policy\n")
    result = _check_layers().check_layers(fake)
    assert result.returncode != 0
    assert "policy_accel.model is not allowed to import policy_accel.policy" in (result.stdout + result.stderr)


def test_ci_runs_the_readme_test_command():
    """.ci/run is the README's test command, verbatim, and that command installs every extra."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command in readme
    assert '".[all,test]"' in command
