"""Check the import layers (pyproject.toml's [tool.importlinter] contracts) with import-linter.

``envs/`` installs as ``policy_accel.envs`` (setuptools package-dir), which import-linter cannot
see in the checkout, so this lays the package out as installed (policy_accel/ with envs/ inside)
in a temporary folder and runs ``lint-imports`` there. Usage: ``python scripts/check_layers.py``;
exit status is lint-imports'.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def check_layers(repo: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run lint-imports on the installed layout of ``repo``; returns the finished process."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    with tempfile.TemporaryDirectory(prefix="policy_accel_layers_") as tmp:
        root = Path(tmp)
        shutil.copytree(repo / "policy_accel", root / "policy_accel", ignore=ignore)
        shutil.copytree(repo / "envs", root / "policy_accel" / "envs", ignore=ignore)
        shutil.copy(repo / "pyproject.toml", root / "pyproject.toml")
        env = {**os.environ, "PYTHONPATH": str(root)}
        return subprocess.run(
            [
                sys.executable,
                "-c",
                "from importlinter.cli import lint_imports_command; lint_imports_command()",
                "pyproject.toml",
                "--no-cache",
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    result = check_layers()
    print(result.stdout + result.stderr, end="")
    raise SystemExit(result.returncode)


if __name__ == "__main__":
    main()
