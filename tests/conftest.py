"""Run every test single-threaded: the tiny nets gain nothing from threads, and on a
2-core machine oversubscribed cores make them many times slower."""

import pytest
import torch


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
