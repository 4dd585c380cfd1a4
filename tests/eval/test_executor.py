"""Per-episode executors (local, Dask): determinism, faults, resume, errors, and the CLI options.

Every Dask cluster here is a real ``LocalCluster`` bound to 127.0.0.1 without a dashboard, with at most 2
single-thread workers, closed at the end; a watchdog bounds each test's time.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import tiny_policy

from policy_accel.cli.main import main
from policy_accel.eval.episode_log import LOG_NAME, EpisodeLog, ResumeError
from policy_accel.eval.executor import (
    DaskExecutor,
    DaskOptions,
    EpisodeFailed,
    EpisodeJob,
    ExecutorError,
    LocalExecutor,
    make_executor,
)
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.eval.sweep import benchmark_episodes, evaluate_episodes
from policy_accel.policy.loading import save_policy

distributed = pytest.importorskip("distributed")

ENV = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300, "render_size": 64}
SEEDS = list(range(100000, 100006))
STEPS = 24
TEST_BOUND_S = 240


@pytest.fixture(autouse=True)
def watchdog():
    """No test may hang: dump the stacks and exit after TEST_BOUND_S."""
    faulthandler.dump_traceback_later(TEST_BOUND_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


@pytest.fixture(scope="module")
def checkpoint(policy, tmp_path_factory) -> Path:
    return save_policy(policy, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def job_of(checkpoint: Path, **changes) -> EpisodeJob:
    options = {
        "label": "ddim-3",
        "checkpoint": str(checkpoint),
        "sampler": {"name": "ddim", "num_steps": 3},
        "env": ENV,
        "max_steps": STEPS,
        "threads": 1,
    }
    return EpisodeJob(**{**options, **changes})


def outcomes(result: dict) -> list[tuple]:
    """Every episode's full outcome, in report order."""
    return [(e["seed"], e["max_reward"], e["success"], e["length"], e["max_coverage"]) for e in result["episodes"]]


def listening_sockets(pids: set[int]) -> list[tuple[int, str, int]]:
    out = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def cluster_pids() -> set[int]:
    me = psutil.Process()
    return {me.pid} | {p.pid for p in me.children(recursive=True)}


@pytest.fixture(scope="module")
def cluster():
    """A 2-worker LocalCluster on 127.0.0.1 for the module (tests reach it by address, as a remote one)."""
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    )
    try:
        yield cluster
    finally:
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def local_result(policy, checkpoint, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("local")
    return evaluate_episodes(policy, job_of(checkpoint), SEEDS, LocalExecutor(), out, progress=False)


# ---------------------------------------------------------------- determinism
def test_local_units_equal_the_batched_loop_with_one_env(policy, local_result) -> None:
    """Per-episode noise streams: an episode's result is what the batched loop gives it with n_envs=1."""
    batched = evaluate_policy(policy, "ddim-3", ENV, SEEDS, n_envs=1, progress=False, max_steps=STEPS)
    assert outcomes(local_result) == outcomes(batched)
    assert local_result["n_episodes"] == len(SEEDS) and local_result["batch_size"] == 1
    assert local_result["executor"]["executor"] == "local"


def test_dask_two_workers_any_order_equal_local(policy, checkpoint, cluster, local_result, tmp_path) -> None:
    """2 workers, seeds in reverse order: every episode identical to the local run; each worker loads once."""
    job = job_of(checkpoint)
    executor = DaskExecutor(DaskOptions(address=cluster.scheduler_address))
    result = evaluate_episodes(policy, job, SEEDS[::-1], executor, tmp_path, progress=False)
    assert sorted(outcomes(result)) == sorted(outcomes(local_result))
    records = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()[1:]]
    loads = [r for r in records if not r["cache_hit"]]
    assert len(loads) <= 2 and len({r["worker"] for r in loads}) == len(loads)  # once per worker, not per task
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in records)
    assert sum(w["episodes"] for w in result["executor"]["workers"].values()) == len(SEEDS)


def test_dask_one_worker_local_cluster_equal_local_and_binds_localhost(
    policy, checkpoint, local_result, tmp_path
) -> None:
    """A LocalCluster started by the executor (1 worker): same episodes; every listening socket on 127.0.0.1."""
    seen: list[tuple[int, str, int]] = []
    executor = DaskExecutor(DaskOptions(n_workers=1, threads_per_worker=1))
    result = evaluate_episodes(
        policy,
        job_of(checkpoint),
        SEEDS,
        executor,
        tmp_path,
        progress=False,
        on_record=lambda record: seen.extend(listening_sockets(cluster_pids())),
    )
    assert outcomes(result) == outcomes(local_result)
    assert seen, "no listening socket seen while the cluster ran"
    assert {ip for _, ip, _ in seen} == {"127.0.0.1"}, seen
    assert executor.cluster is None and executor.client is None  # closed at the end


# ---------------------------------------------------------------- faults
def test_killed_worker_episodes_run_elsewhere_exactly_once(policy, checkpoint, cluster, tmp_path) -> None:
    seeds = list(range(100000, 100016))
    job = job_of(checkpoint, max_steps=60)
    executor = DaskExecutor(DaskOptions(address=cluster.scheduler_address))
    killed: list[int] = []

    def kill_one(record: dict) -> None:
        if not killed:
            pids = executor.client.run(os.getpid)  # worker address -> its process id
            victim = next(pid for address, pid in pids.items() if address != record["worker"])
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    result = evaluate_episodes(policy, job, seeds, executor, tmp_path, progress=False, on_record=kill_one)
    assert killed
    assert sorted(e["seed"] for e in result["episodes"]) == seeds  # every episode exactly once
    lines = (tmp_path / LOG_NAME).read_text().splitlines()[1:]
    assert sorted(json.loads(line)["episode"]["seed"] for line in lines) == seeds
    reference = evaluate_policy(policy, "ddim-3", ENV, seeds, n_envs=1, progress=False, max_steps=60)
    assert outcomes(result) == outcomes(reference)  # rescheduled episodes give the same results


def test_failing_policy_stops_with_the_workers_traceback(policy, checkpoint, tmp_path) -> None:
    bad = job_of(checkpoint, sampler={"name": "ddim", "num_steps": 3, "no_such_option": 1})
    executor = DaskExecutor(DaskOptions(n_workers=1))
    with pytest.raises(EpisodeFailed, match=r"(?s)failed on worker tcp://127\.0\.0\.1:\d+.*worker traceback"):
        evaluate_episodes(policy, bad, SEEDS, executor, tmp_path, progress=False)
    assert executor.cluster is None
    assert not (tmp_path / "report.json").exists()


def test_unreachable_address_fails_within_the_timeout() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ExecutorError, match=f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        with DaskExecutor(DaskOptions(address=f"tcp://127.0.0.1:{port}", connect_timeout_s=2)):
            pass
    assert time.monotonic() - start < 30


def test_missing_extra_names_the_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r'pip install "policy-accel\[dask\]"'):
        make_executor("dask")


# ---------------------------------------------------------------- resume
def test_resume_runs_only_missing_episodes_and_refuses_another_config(policy, checkpoint, local_result, tmp_path):
    job = job_of(checkpoint)
    log_path = tmp_path / LOG_NAME
    with EpisodeLog(log_path, {"kind": "eval", "x": 1}, resume=False):
        pass
    # An interrupted run: the first 3 episodes done, the 4th half written when the process died.
    evaluate_episodes(policy, job, SEEDS[:3], LocalExecutor(), tmp_path, progress=False)
    with log_path.open("a") as handle:
        handle.write('{"label": "ddim-3", "episode": {"seed": 1000')
    ran: list[int] = []
    result = evaluate_episodes(
        policy,
        job,
        SEEDS,
        LocalExecutor(),
        tmp_path,
        resume=True,
        progress=False,
        on_record=lambda r: ran.append(r["episode"]["seed"]),
    )
    assert ran == SEEDS[3:]
    assert outcomes(result) == outcomes(local_result)
    assert result["executor"]["episodes_resumed"] == 3
    other = job_of(checkpoint, sampler={"name": "ddim", "num_steps": 2})
    with pytest.raises(ResumeError, match=r"another configuration.*sampler"):
        evaluate_episodes(policy, other, SEEDS, LocalExecutor(), tmp_path, resume=True, progress=False)


# ---------------------------------------------------------------- bench
def test_bench_rewards_from_episodes_latency_measured_apart(policy, checkpoint, tmp_path) -> None:
    samplers = [{"name": "ddim", "num_steps": 3}, {"name": "ddim", "num_steps": 2}]
    report = benchmark_episodes(
        policy,
        samplers,
        ENV,
        SEEDS[:4],
        LocalExecutor(),
        tmp_path,
        checkpoint=str(checkpoint),
        max_steps=STEPS,
        latency_seeds=1,
        progress=False,
        compare=[["ddim-3", "ddim-2"]],
    )
    reference = evaluate_policy(policy, "ddim-2", ENV, SEEDS[:4], n_envs=1, progress=False, max_steps=STEPS)
    rows = {r["label"]: r for r in report["results"]}
    assert outcomes(rows["ddim-2"]) == outcomes(reference)
    assert rows["ddim-3"]["n_episodes"] == 4 and rows["ddim-3"]["latency_measurement_episodes"] == 1
    assert "this process alone" in rows["ddim-3"]["figure_sources"]["latency"]
    assert report["comparisons"][0]["n_seeds"] == 4


# ---------------------------------------------------------------- CLI
def test_cli_eval_executor_local_resume_and_option_errors(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = [f"checkpoint={checkpoint}", "sampler=ddim-3", "n_seeds=3", "max_steps=12", f"output_dir={out}"]
    main(["eval", *args, "executor=local"])
    report = json.loads((out / "report.json").read_text())
    assert report["executor"]["episodes_run"] == 3
    assert "Where the figures come from" in (out / "report.md").read_text()
    main(["eval", *args, "executor=local", "resume=true", "n_seeds=4"])
    report = json.loads((out / "report.json").read_text())
    assert report["executor"]["episodes_resumed"] == 3 and report["executor"]["episodes_run"] == 1
    with pytest.raises(SystemExit, match="another configuration"):
        main(["eval", *args, "executor=local", "resume=true", "max_steps=13"])
    with pytest.raises(SystemExit, match="resume=true needs executor"):
        main(["eval", *args, "resume=true"])
    with pytest.raises(SystemExit, match="executor must be"):
        main(["eval", *args, "executor=ray"])
    with pytest.raises(SystemExit, match="dask.address must be"):
        main(["eval", *args, "executor=dask", "dask.address=localhost"])


def test_cli_missing_dask_names_the_install(checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SystemExit, match=r'pip install "policy-accel\[dask\]"'):
        main(["eval", f"checkpoint={checkpoint}", "sampler=ddim-3", "executor=dask", f"output_dir={tmp_path}"])


def test_help_documents_the_options(capsys) -> None:
    for command in ("eval", "bench"):
        main([command, "--help"])
        text = capsys.readouterr().out
        for key in (
            "executor",
            "resume",
            "dask.address",
            "dask.n_workers",
            "dask.threads_per_worker",
            "dask.resources",
        ):
            assert f"  {key} " in text, (command, key)
    main(["bench", "--help"])
    assert "latency_seeds" in capsys.readouterr().out


def test_execution_mode_and_delay_travel_with_the_unit(policy, checkpoint, tmp_path) -> None:
    """An episode unit carries execution and delay to the rollout: the same as the batched loop with one env."""
    job = job_of(checkpoint, execution="blocking", delay=2)
    result = evaluate_episodes(policy, job, SEEDS[:3], LocalExecutor(), tmp_path, progress=False)
    batched = evaluate_policy(
        policy, "ddim-3", ENV, SEEDS[:3], n_envs=1, progress=False, max_steps=STEPS, execution="blocking", delay=2
    )
    assert outcomes(result) == outcomes(batched)
    sync = evaluate_policy(policy, "ddim-3", ENV, SEEDS[:3], n_envs=1, progress=False, max_steps=STEPS)
    assert outcomes(result) != outcomes(sync)


def test_rtc_units_pool_their_action_jumps_as_the_batched_loop(policy, checkpoint, tmp_path) -> None:
    """rtc with its guidance span travels with the unit, and the episodes' jumps pool into the same smoothness."""
    job = job_of(checkpoint, execution="rtc", delay=2, guidance=4.0, span="all")
    result = evaluate_episodes(policy, job, SEEDS[:3], LocalExecutor(), tmp_path, progress=False)
    batched = evaluate_policy(
        policy, "ddim-3", ENV, SEEDS[:3], n_envs=1, progress=False, max_steps=STEPS, execution="rtc", delay=2, span=None
    )
    assert outcomes(result) == outcomes(batched)
    for where in ("switch", "within"):  # the records keep jumps to 1e-6 env units
        assert result["smoothness"][where] == pytest.approx(batched["smoothness"][where], abs=1e-5)
    assert result["smoothness"]["switch"]["n"] > 0
    assert result["rtc_span"] == "all" and result["rtc_guidance"] == 4.0
    short = evaluate_episodes(
        policy, job_of(checkpoint, execution="rtc", delay=2), SEEDS[:3], LocalExecutor(), tmp_path / "s"
    )
    assert short["smoothness"] != result["smoothness"]  # the default span (2) is another guidance


def test_cli_bench_executor_local(checkpoint, tmp_path) -> None:
    out = tmp_path / "bench"
    main(
        [
            "bench",
            f"checkpoint={checkpoint}",
            "samplers=[{name: ddim, num_steps: 3},{name: ddim, num_steps: 2}]",
            "n_seeds=2",
            "max_steps=12",
            "latency_seeds=1",
            "executor=local",
            f"output_dir={out}",
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert [r["n_episodes"] for r in report["results"]] == [2, 2]
    assert "latency: a dedicated measurement" in (out / "report.md").read_text()
