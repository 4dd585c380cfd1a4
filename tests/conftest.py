"""Common test set-up: one torch thread, a private calibration cache, and shared/ checks.

Every test runs single-threaded: the tiny nets gain nothing from threads, and on a 2-core
machine oversubscribed cores make them many times slower.
"""

from __future__ import annotations

import pytest
import torch
from helpers.paths import in_ci


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_shared(path): needs PATH from ../shared (fails in CI when missing)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_shared"):
        path = marker.args[0]
        if not path.exists():
            message = f"{path} is missing: shared/ must lie beside the checkout (or set POLICY_ACCEL_SHARED)"
            if in_ci():
                pytest.fail(f"CI=true and {message}", pytrace=False)
            pytest.skip(message)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_calibration_cache(tmp_path_factory, monkeypatch):
    """Window calibrations of tests never touch (or reuse) the user's cache."""
    monkeypatch.setenv("POLICY_ACCEL_CACHE_DIR", str(tmp_path_factory.mktemp("calibration_cache")))
