"""The house's own checks run with the tests, so CI enforces them: ruff (lint and format) and
the import layers (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def check_layers(root: Path = REPO) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``root`` (its pyproject.toml's contracts)."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from importlinter.cli import lint_imports_command; lint_imports_command()",
            "--no-cache",
        ],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_import_layers_hold():
    result = check_layers()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "BROKEN" not in output and "KEPT" in output


def test_a_layer_violation_is_caught(tmp_path):
    """The contract check can fail: a model module importing the policy layer breaks it."""
    fake = tmp_path / "repo"
    shutil.copytree(REPO / "policy_accel", fake / "policy_accel", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", fake / "pyproject.toml")
    (fake / "policy_accel" / "model" / "upward.py").write_text("import policy_accel.policy.diffusion_policy\n")
    result = check_layers(fake)
    assert result.returncode != 0
    assert "policy_accel.model is not allowed to import policy_accel.policy" in (result.stdout + result.stderr)


def test_envs_import_nothing_of_the_package():
    """envs/ (installed as policy_accel.envs, outside the checkout's package folder, so import-linter cannot see
    it) imports only itself: the simulators stand alone."""
    offenders = []
    for path in sorted((REPO / "envs").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(REPO)}: {n}"
                for n in names
                if n.startswith("policy_accel") and not n.startswith("policy_accel.envs")
            ]
    assert not offenders, offenders


def test_ci_runs_the_readme_test_command():
    """.ci/run is the README's test command, verbatim, and that command installs every extra."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = next(line for line in ci.splitlines() if "pytest" in line)
    assert command in readme
    assert '".[all,test]"' in command
