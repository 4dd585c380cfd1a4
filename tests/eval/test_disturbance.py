"""Benches say when their numbers are noise: the disturbance monitor, its verdict, and the bench report's warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Iterator

import pytest
import torch
from helpers import tiny_policy

from policy_accel.eval import bench
from policy_accel.eval.bench import run_benchmark
from policy_accel.eval.disturbance import (
    DRIFT_LIMIT,
    NEIGHBOUR_CORES_LIMIT,
    TAIL_RATIO_LIMIT,
    DisturbanceMonitor,
    assess,
    calibration_ms,
    own_cpu_s,
    quiet_line,
    read_cpu_counters,
    tail_ratios,
    warning_lines,
)
from policy_accel.eval.report import bench_markdown

ENV_CFG = {"id": "policy_accel/PushT-v0", "obs_type": "keypoints", "max_episode_steps": 300}
BUSY = "import time\nend = time.perf_counter() + {seconds}\nwhile time.perf_counter() < end:\n    pass\n"


def measurement(neighbour: float = 0.02, drift: float = 1.02, **samplers: dict[str, Any]) -> dict[str, Any]:
    """A synthetic run on 2 cores, torch at 2 threads: no spare core."""
    rows = {label: {"wall_s": 1.0, "spans": 2, "neighbour_cores": 0.01, "burst_share": 0.0} for label in ("a", "b")}
    for label, row in samplers.items():
        rows[label].update(row)
    return {
        "source": "proc_stat",
        "cpus": 2,
        "torch_threads": 2,
        "neighbour_cores": neighbour,
        "calibration_ms": {"start": 10.0, "end": 10.0 * drift},
        "calibration_drift": drift,
        "burst_share": 0.0,
        "samplers": rows,
    }


# ---------------------------------------------------------------- the verdict, on synthetic measurements
def test_a_quiet_run_is_quiet_and_says_so() -> None:
    verdict = assess(measurement(), {"a": 2.0, "b": 1.5})
    assert verdict["verdict"] == "quiet" and verdict["affected"] == [] and verdict["reasons"] == []
    assert warning_lines(verdict) == []
    assert verdict["thresholds"]["neighbour_cores"] == NEIGHBOUR_CORES_LIMIT
    line = quiet_line(verdict)
    assert line and "0.02 cores" in line and "1.02x" in line and "p99 above 10x" in line


def test_a_neighbour_while_one_sampler_ran_names_that_sampler() -> None:
    # The run's average stays under the limit; sampler b's spans saw a core taken, a third of its time in bursts.
    verdict = assess(measurement(neighbour=0.2, b={"neighbour_cores": 0.9, "burst_share": 0.3}))
    assert verdict["verdict"] == "disturbed" and verdict["affected"] == ["b"]
    assert "0.90 cores" in " ".join(verdict["samplers"]["b"]["reasons"])
    assert "b" in verdict["reasons"][0]
    lines = warning_lines(verdict)
    assert "busy" in lines[0] and any(line.startswith("affected: b (") for line in lines)
    # A short burst alone (2% of b's time) is enough to name it: its p99 may be the burst's.
    assert assess(measurement(b={"burst_share": 0.02}))["affected"] == ["b"]


def test_a_busy_run_and_a_drifting_machine_touch_every_sampler() -> None:
    busy = assess(measurement(neighbour=1.0, a={"neighbour_cores": 1.0}, b={"neighbour_cores": 1.0}))
    assert busy["verdict"] == "disturbed" and busy["affected"] == ["a", "b"]
    assert "1.00 cores on average" in busy["reasons"][0]
    for drift in (1.5, 0.6):  # slower at the end, or at the start
        verdict = assess(measurement(drift=drift))
        assert verdict["verdict"] == "disturbed" and verdict["affected"] == ["a", "b"]
        assert f"{drift:.2f}x" in verdict["reasons"][0]
    assert assess(measurement(drift=1.2))["verdict"] == "quiet"


def test_an_extreme_tail_alone_is_suspect_and_spare_cores_allow_a_neighbour() -> None:
    verdict = assess(measurement(), {"a": TAIL_RATIO_LIMIT + 2, "b": 3.0})
    assert verdict["verdict"] == "suspect" and verdict["affected"] == ["a"]
    assert "p99 12.0x" in verdict["samplers"]["a"]["reasons"][0]
    # 16 cores, torch at 4 threads: 11 cores the bench never asks for; a neighbour there is not counted.
    wide = {**measurement(neighbour=5.0, a={"neighbour_cores": 5.0}), "cpus": 16, "torch_threads": 4}
    assert assess(wide)["verdict"] == "quiet"
    assert assess({**wide, "neighbour_cores": 11.5})["verdict"] == "disturbed"


def test_tail_ratios_of_bench_results() -> None:
    results = [{"label": "a", "latency_ms": {"p50": 10.0, "p99": 80.0}}, {"label": "b", "latency_ms": {}}]
    assert tail_ratios(results) == {"a": 8.0, "b": None}


# ---------------------------------------------------------------- the counters
def test_proc_stat_is_read_per_core(tmp_path: Any) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 30 1000 0 0 0 6 0 0\ncpu0 100 0 10 500 0 0 0 2 0 0\ncpu1 200 0 20 500 0 0 0 4 0 0\nintr 1\n"
    )
    tick = os.sysconf("SC_CLK_TCK")
    assert read_cpu_counters({1}, str(stat)) == pytest.approx((224 / tick, 4 / tick))
    assert read_cpu_counters(None, str(stat)) == pytest.approx((336 / tick, 6 / tick))
    assert read_cpu_counters({7}, str(stat)) is None and read_cpu_counters(None, str(tmp_path / "none")) is None


def test_own_work_is_not_a_neighbour_and_load_average_is_the_fallback() -> None:
    # A /proc/stat that sees only this process: heavy work of our own must come out quiet.
    quiet = DisturbanceMonitor(period_s=0.05, calibrate=False, counters=lambda cpus: (own_cpu_s(), 0.0))
    with quiet:
        with quiet.span("a"):
            calibration_ms(3)
    m = quiet.measurement
    assert m["source"] == "proc_stat" and m["own_cores"] > 0.3
    assert m["neighbour_cores"] == pytest.approx(0, abs=1e-3)
    assert m["samplers"]["a"]["neighbour_cores"] == pytest.approx(0, abs=1e-3)
    assert assess(m)["verdict"] == "quiet" and m["calibration_drift"] is None
    # No /proc/stat: runnable threads beyond our own busy cores, from the load average.
    loaded = DisturbanceMonitor(period_s=0.05, calibrate=False, counters=None, load=lambda: 3.0)
    with loaded:
        time.sleep(0.15)
    m = loaded.measurement
    assert m["source"] == "load_average" and m["neighbour_cores"] == pytest.approx(3.0, abs=0.2)
    assert m["load_average_1min"]["max"] == 3.0 and m["burst_share"] is None
    assert assess(m)["verdict"] == "disturbed"
    json.dumps(m, allow_nan=False)


# ---------------------------------------------------------------- a deliberate CPU neighbour
needs_proc = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or read_cpu_counters() is None, reason="needs Linux /proc/stat"
)


@pytest.fixture
def one_core() -> Iterator[int]:
    """Every thread of this process (torch's idle workers too: their CPU is ours) and what it starts, on the
    least busy core, torch at one thread: a neighbour started now shares our core, whatever else runs."""
    threads = torch.get_num_threads()
    saved = {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir("/proc/self/task")}
    cores = sorted(os.sched_getaffinity(0))
    before = {c: read_cpu_counters({c}) for c in cores}
    time.sleep(0.2)
    core = min(cores, key=lambda c: read_cpu_counters({c})[0] - before[c][0])
    for tid in saved:
        os.sched_setaffinity(tid, {core})
    torch.set_num_threads(1)
    try:
        yield core
    finally:
        for tid, cpus in saved.items():
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:  # a thread that has ended since
                pass
        torch.set_num_threads(threads)


def _cpu_s(pid: int) -> float:
    """A process's CPU time so far (utime + stime of /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _work(monitor: DisturbanceMonitor, label: str, seconds: float, spans: int = 2) -> None:
    """``seconds`` of matrix products in ``spans`` spans of ``label`` (a sampler's seed batches)."""
    for _ in range(spans):
        with monitor.span(label):
            end = time.perf_counter() + seconds / spans
            while time.perf_counter() < end:
                calibration_ms(1)


@needs_proc
def test_a_busy_neighbour_is_seen_named_and_slows_the_calibration(one_core: int) -> None:
    monitor = DisturbanceMonitor(period_s=0.25).start()
    _work(monitor, "alone", 0.6)
    neighbour = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=30)])  # on our core (inherited)
    try:
        time.sleep(0.1)
        child_before = _cpu_s(neighbour.pid)
        _work(monitor, "beside", 1.0)
        child_s = _cpu_s(neighbour.pid) - child_before
        m = monitor.stop()  # its closing calibration runs beside the neighbour too
    finally:
        neighbour.kill()
        neighbour.wait()
    verdict = assess(m)
    alone, beside = m["samplers"]["alone"], m["samplers"]["beside"]
    print(
        f"others on our core: alone {alone['neighbour_cores']:.2f} cores, beside {beside['neighbour_cores']:.2f} "
        f"(the neighbour alone {child_s / beside['wall_s']:.2f}), run {m['neighbour_cores']:.2f}; "
        f"calibration {m['calibration_ms']} ({m['calibration_drift']:.2f}x)"
    )
    assert verdict["verdict"] == "disturbed" and "beside" in verdict["affected"]
    assert beside["neighbour_cores"] > NEIGHBOUR_CORES_LIMIT
    # Whatever else shares the machine, the neighbour's own CPU while "beside" ran is in "beside"'s figure
    # (two spans cover all but microseconds of that phase; jiffies are 10 ms).
    assert beside["neighbour_cores"] * beside["wall_s"] >= 0.9 * child_s - 0.05
    assert m["calibration_drift"] > DRIFT_LIMIT  # the same work took longer at the end
    assert m["cpus"] == 1 and m["timeline"] and json.dumps(verdict, allow_nan=False)


@needs_proc
def test_every_cpu_second_of_a_neighbour_is_counted(one_core: int) -> None:
    children = os.times()
    with DisturbanceMonitor(period_s=0.25, calibrate=False) as monitor:
        neighbour = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=1.0)])
        _work(monitor, "beside", 0.5)
        neighbour.wait()
    after = os.times()
    child_s = (after.children_user + after.children_system) - (children.children_user + children.children_system)
    m = monitor.measurement
    others_s = m["neighbour_cores"] * m["wall_s"]
    print(f"neighbour's own CPU {child_s:.2f} s; others on our core, measured {others_s:.2f} s")
    assert child_s > 0.2 and others_s >= child_s - 0.05  # jiffies: 10 ms each, a few per read
    assert assess(m)["verdict"] == "disturbed"


# ---------------------------------------------------------------- the bench report
def busy_neighbour_monitor(**kwargs: Any) -> DisturbanceMonitor:
    """A monitor whose /proc/stat shows a neighbour taking one core the whole time."""
    t0 = time.perf_counter()
    kwargs.update(calibrate=False, counters=lambda cpus: (own_cpu_s() + time.perf_counter() - t0, 0.0))
    return DisturbanceMonitor(**kwargs)


def test_the_bench_report_carries_the_verdict_and_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tiny_policy()
    specs = [{"name": "ddim", "num_steps": 2}, {"name": "ddim", "num_steps": 3}]
    report = run_benchmark(policy, specs, ENV_CFG, [100000, 100001], n_envs=1, max_steps=4, progress=False)
    d = report["disturbance"]
    assert d["verdict"] in ("quiet", "disturbed", "suspect") and set(d["samplers"]) == {"ddim-2", "ddim-3"}
    m = d["measurements"]
    assert m["samplers"]["ddim-2"]["spans"] == 2 and m["calibration_ms"]["start"] > 0
    assert d["thresholds"]["calibration_drift"] == DRIFT_LIMIT
    json.dumps(report, allow_nan=False)

    monkeypatch.setattr(bench, "DisturbanceMonitor", busy_neighbour_monitor)
    capsys.readouterr()
    report = run_benchmark(policy, specs, ENV_CFG, [100000], n_envs=1, max_steps=4, progress=False)
    d = report["disturbance"]
    assert d["verdict"] == "disturbed" and d["affected"] == ["ddim-2", "ddim-3"]
    printed = capsys.readouterr().out
    assert "bench: WARNING: the machine was busy" in printed and "affected: ddim-2" in printed
    text = bench_markdown(report)
    head = text.split("| sampler |")[0]  # the warning comes before the table
    assert "> **Warning: the machine was busy" in head and "affected: ddim-3" in head

    report["disturbance"] = assess(
        {**d["measurements"], "neighbour_cores": 0.01, "burst_share": 0.0, "samplers": {}, "calibration_drift": 1.0}
    )
    head = bench_markdown(report).split("| sampler |")[0]
    assert "Machine quiet during the run" in head and "Warning" not in head
