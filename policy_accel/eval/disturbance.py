"""Was the machine quiet while a bench ran? Neighbour CPU, load average and a calibration call's drift.

A latency figure measured while another process took a core is the neighbour's figure as much as the
sampler's: on a shared 2-core machine a bench once reported p99 tails of 6-8 s, ten times its median,
without a word. :class:`DisturbanceMonitor` records, while a bench runs:

- the CPU time other processes (and the hypervisor, as steal) took on the cores this process may run on:
  the busy jiffies of those cores in ``/proc/stat`` minus this process's own CPU time (``time.process_time``:
  every thread, not its children), over the whole run, over each sampler's spans (read at their edges) and over
  each interval of a light background thread (every ``period_s``), which finds short bursts;
- the 1-minute load average, sampled by the same thread (the estimate where ``/proc/stat`` is missing);
- a fixed calibration workload (matrix products at this process's torch thread count) timed at the start
  and at the end: a drift between them is the machine changing speed (a neighbour, thermal or frequency
  scaling), whether or not a process can be seen.

:func:`assess` turns the measurements into a verdict against the thresholds below and names the samplers
whose figures are affected. Benches run the samplers interleaved per seed batch, so a neighbour's burst
lands on whichever sampler was running then: the per-sampler figures say which.
"""

from __future__ import annotations

import math
import os
import statistics
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch

# Other processes' CPU on our cores, averaged over the run (or over one sampler's spans), in cores. A quarter
# of a core means a core was taken from the bench a quarter of the time; torch's parallel regions wait for
# their slowest thread, so where the bench uses every core (torch's default) about that share of chunks is
# stretched, far beyond what a p99 tolerates. Idle daemons stay below 0.05.
NEIGHBOUR_CORES_LIMIT = 0.25
# The same over one sampling interval (a burst): half a core for a whole second stretches every chunk in it.
BURST_CORES_LIMIT = 0.5
# A sampler that spent more than 1% of its running time inside bursts may owe its p99 to them.
BURST_SHARE_LIMIT = 0.01
# The calibration call's end time over its start time (or the inverse): eight back-to-back medians of five
# calls stayed within 1.24x of each other even on a loaded 2-core EPYC (1 thread; 1.02x at 2 threads), so
# 1.3x is a change of the machine's speed, not the call's own noise.
DRIFT_LIMIT = 1.3
# One sampler's chunk p99 / p50. The largest in this project's shipped reports is 6.5 (a delay sweep on a
# shared machine); a sampler's own variation (Picard rounds, the first chunk) stays well below; 10x is the
# issue's symptom. Named even where no neighbour was seen (I/O, memory pressure, a throttled VM are invisible
# to CPU counts), as "suspect", not "disturbed".
TAIL_RATIO_LIMIT = 10.0
SAMPLE_PERIOD_S = 1.0  # the background thread's interval: two small file reads a second
TIMELINE_POINTS = 240  # the report's timeline is thinned to this many points (max neighbour per point)
CALIBRATION_SIZE, CALIBRATION_PRODUCTS, CALIBRATION_CALLS = 256, 8, 5  # ~5-30 ms a call on a CPU

THRESHOLDS = {
    "neighbour_cores": NEIGHBOUR_CORES_LIMIT,
    "burst_cores": BURST_CORES_LIMIT,
    "burst_share": BURST_SHARE_LIMIT,
    "calibration_drift": DRIFT_LIMIT,
    "tail_ratio_p99_p50": TAIL_RATIO_LIMIT,
}


# ---------------------------------------------------------------- counters
def our_cpus() -> set[int] | None:
    """The cores this process may run on (None where the OS does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def read_cpu_counters(cpus: set[int] | None = None, path: str = "/proc/stat") -> tuple[float, float] | None:
    """Busy and steal CPU-seconds so far on ``cpus`` (every core when None), from ``/proc/stat``; None where it
    cannot be read. Busy is user + nice + system + irq + softirq + steal (guest time is inside user)."""
    try:
        with open(path, encoding="ascii") as file:
            lines = [line.split() for line in file if line.startswith("cpu")]
        tick = float(os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, AttributeError):
        return None
    busy = steal = 0
    found = False
    for name, *fields in lines:
        if (name == "cpu") != (cpus is None) or (cpus is not None and int(name[3:]) not in cpus):
            continue
        values = [int(v) for v in fields[:8]] + [0] * (8 - len(fields[:8]))
        user, nice, system, _idle, _iowait, irq, softirq, stolen = values
        busy += user + nice + system + irq + softirq + stolen
        steal += stolen
        found = True
    return (busy / tick, steal / tick) if found else None


def own_cpu_s() -> float:
    """This process's CPU time, every thread (not its children: a deliberate neighbour may be one)."""
    return time.process_time()


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def calibration_ms(calls: int = CALIBRATION_CALLS) -> float:
    """Median ms of a fixed workload: ``CALIBRATION_PRODUCTS`` products of two 256x256 float32 matrices on the
    CPU, at this process's torch thread count (one warm-up call first)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(CALIBRATION_SIZE, CALIBRATION_SIZE, generator=generator)
    b = torch.randn(CALIBRATION_SIZE, CALIBRATION_SIZE, generator=generator)
    times = []
    for _ in range(calls + 1):
        start = time.perf_counter()
        for _ in range(CALIBRATION_PRODUCTS):
            a @ b
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


# ---------------------------------------------------------------- the monitor
class DisturbanceMonitor:
    """Records the machine's load while a bench runs: ``start()``, ``span(label)`` around each sampler's run,
    ``stop()`` returns the measurements (a JSON-able dict; :func:`assess` judges it). Also a context manager.

    ``counters`` and ``load`` replace the readers of ``/proc/stat`` and the load average (tests; None: none)."""

    def __init__(
        self,
        period_s: float = SAMPLE_PERIOD_S,
        calibrate: bool = True,
        counters: Any = read_cpu_counters,
        load: Any = load_average,
    ) -> None:
        self.period_s, self.calibrate = float(period_s), calibrate
        self._counters, self._load = counters, load
        self._cpus = our_cpus()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._intervals: list[tuple[float, float, float | None, float | None]] = []  # start, end, cores, load
        self._spans: list[tuple[str, float, float, float | None]] = []  # label, start, end, others' CPU-s
        self._calibration: dict[str, float] = {}
        self._first: tuple[float, tuple[float, float] | None, float] | None = None
        self._last = self._first
        self.measurement: dict[str, Any] | None = None

    def _snapshot(self) -> tuple[float, tuple[float, float] | None, float]:
        counters = self._counters(self._cpus) if self._counters is not None else None
        return time.perf_counter(), counters, own_cpu_s()

    @staticmethod
    def _others_s(a: tuple, b: tuple) -> float | None:
        """CPU-seconds others took on our cores between two snapshots. /proc/stat counts in jiffies (10 ms):
        over a short span this may come out a little negative; sums of spans are unbiased, so only the
        reported figures are clipped at 0."""
        if a[1] is None or b[1] is None:
            return None
        return (b[1][0] - a[1][0]) - (b[2] - a[2])

    def _read_load(self) -> float | None:
        return self._load() if self._load is not None else None

    def start(self) -> DisturbanceMonitor:
        if self._first is not None:
            raise RuntimeError("a DisturbanceMonitor starts once")
        if self.calibrate:
            self._calibration["start"] = calibration_ms()
        self._start_load = self._read_load()
        self._first = self._last = self._snapshot()
        self._thread = threading.Thread(target=self._run, name="disturbance-monitor", daemon=True)
        self._thread.start()
        return self

    def _tick(self) -> None:
        now, load = self._snapshot(), self._read_load()
        with self._lock:
            last, self._last = self._last, now
            others, dt = self._others_s(last, now), now[0] - last[0]
            cores = None if others is None or dt <= 0 else max(0.0, others / dt)
            self._intervals.append((last[0], now[0], cores, load))

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._tick()

    @contextmanager
    def span(self, label: str) -> Iterator[None]:
        """Attribute the time inside to ``label`` (a sampler): its wall time and the CPU others took meanwhile."""
        before = self._snapshot()
        try:
            yield
        finally:
            after = self._snapshot()
            self._spans.append((str(label), before[0], after[0], self._others_s(before, after)))

    def stop(self) -> dict[str, Any]:
        """Stop the thread, time the calibration again and return the measurements."""
        if self._first is None or self._thread is None:
            raise RuntimeError("stop() before start()")
        if self.measurement is not None:
            return self.measurement
        self._stop.set()
        self._thread.join()
        self._tick()  # the last, partial interval
        if self.calibrate:
            self._calibration["end"] = calibration_ms()
        self.measurement = self._measurements()
        return self.measurement

    def __enter__(self) -> DisturbanceMonitor:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _measurements(self) -> dict[str, Any]:
        first, last = self._first, self._last
        assert first is not None and last is not None
        wall = max(last[0] - first[0], 1e-9)
        own_cores = (last[2] - first[2]) / wall
        others = self._others_s(first, last)
        loads = [x for x in [self._start_load, *(i[3] for i in self._intervals)] if x is not None]
        load_mean = statistics.fmean(loads) if loads else None
        if others is not None:
            source, neighbour = "proc_stat", max(0.0, others / wall)
        elif load_mean is not None:  # runnable threads beyond our own busy cores (coarse: a 1-minute average)
            source, neighbour = "load_average", max(0.0, load_mean - own_cores)
        else:
            source, neighbour = None, None
        steal = (last[1][1] - first[1][1]) / wall if last[1] is not None and first[1] is not None else None
        facts = {"cpus": len(self._cpus) if self._cpus is not None else os.cpu_count()}
        facts["torch_threads"] = torch.get_num_threads()
        burst_limit = spare_cores(facts) + BURST_CORES_LIMIT
        bursts = [(s, e) for s, e, cores, _ in self._intervals if cores is not None and cores > burst_limit]
        interval_cores = [i[2] for i in self._intervals if i[2] is not None]
        samplers: dict[str, dict[str, Any]] = {}
        for label, start, end, others_s in self._spans:
            row = samplers.setdefault(label, {"wall_s": 0.0, "others_s": 0.0, "burst_s": 0.0, "spans": 0})
            row["wall_s"] += end - start
            row["others_s"] = None if others_s is None or row["others_s"] is None else row["others_s"] + others_s
            row["burst_s"] += sum(max(0.0, min(end, e) - max(start, s)) for s, e in bursts)
            row["spans"] += 1
        for row in samplers.values():
            span_wall = max(row["wall_s"], 1e-9)
            others_s = row.pop("others_s")
            row["neighbour_cores"] = None if others_s is None else max(0.0, others_s / span_wall)
            row["burst_share"] = row.pop("burst_s") / span_wall if interval_cores else None
        drift = None
        if self._calibration.get("start") and self._calibration.get("end"):
            drift = self._calibration["end"] / self._calibration["start"]
        return {
            "source": source,
            "wall_s": wall,
            **facts,
            "own_cores": own_cores,
            "neighbour_cores": neighbour,
            "steal_cores": steal,
            "neighbour_cores_peak": max(interval_cores) if interval_cores else None,
            "burst_share": sum(e - s for s, e in bursts) / wall if interval_cores else None,
            "load_average_1min": {
                "start": loads[0] if loads else None,
                "mean": load_mean,
                "max": max(loads) if loads else None,
            },
            "calibration_ms": dict(self._calibration),
            "calibration_drift": drift,
            "period_s": self.period_s,
            "samplers": samplers,
            "timeline": _timeline(self._intervals, first[0]),
        }


def _timeline(intervals: list[tuple[float, float, float | None, float | None]], t0: float) -> list[list[Any]]:
    """[seconds since start, neighbour cores (the max of the merged intervals), load average] per point."""
    step = max(1, math.ceil(len(intervals) / TIMELINE_POINTS))
    points = []
    for i in range(0, len(intervals), step):
        group = intervals[i : i + step]
        cores = [c for _, _, c, _ in group if c is not None]
        points.append([round(group[-1][1] - t0, 2), round(max(cores), 3) if cores else None, group[-1][3]])
    return points


# ---------------------------------------------------------------- the verdict
def tail_ratios(results: Any) -> dict[str, float | None]:
    """Chunk p99 / p50 of each bench result, by label."""
    ratios = {}
    for r in results:
        lat = r.get("latency_ms") or {}
        p50, p99 = lat.get("p50"), lat.get("p99")
        ratios[str(r.get("label", r.get("sampler")))] = p99 / p50 if p50 and p99 is not None else None
    return ratios


def spare_cores(measurement: Mapping[str, Any]) -> int:
    """Cores the bench never asks for: those beyond its torch threads and one more (the Python thread that
    steps the envs, this monitor). A neighbour there costs no chunk any time (the calibration drift still
    sees a shared cache or a lower clock), so it is allowed on top of the limits."""
    cpus, threads = measurement.get("cpus"), measurement.get("torch_threads")
    if not cpus or not threads:
        return 0
    return max(0, int(cpus) - int(threads) - 1)


def assess(measurement: Mapping[str, Any], tails: Mapping[str, float | None] | None = None) -> dict[str, Any]:
    """The verdict on a run: ``quiet``, ``disturbed`` (the machine was seen busy or changing speed) or
    ``suspect`` (only a sampler's extreme p99/p50). Returns the verdict, its reasons, the affected samplers
    (by label, each with why) and the thresholds and measurements behind it."""
    tails = dict(tails or {})
    reasons = []
    spare = spare_cores(measurement)
    neighbour = measurement.get("neighbour_cores")
    if neighbour is not None and neighbour - spare > NEIGHBOUR_CORES_LIMIT:
        reasons.append(
            f"other processes took {neighbour:.2f} cores on average while the bench ran "
            f"(limit {NEIGHBOUR_CORES_LIMIT}"
            + (f" beyond {spare} spare cores" if spare else "")
            + f"; from {measurement.get('source')})"
        )
    drift = measurement.get("calibration_drift")
    drifted = drift is not None and drift > 0 and max(drift, 1 / drift) > DRIFT_LIMIT
    if drifted:
        ms = measurement.get("calibration_ms") or {}
        reasons.append(
            f"the calibration call took {ms.get('start', float('nan')):.1f} ms at the start and "
            f"{ms.get('end', float('nan')):.1f} ms at the end ({drift:.2f}x, limit {DRIFT_LIMIT}x)"
        )
    samplers = dict(measurement.get("samplers") or {})
    if not samplers:
        share = measurement.get("burst_share") or 0.0
        if share > BURST_SHARE_LIMIT:
            reasons.append(f"{100 * share:.0f}% of the run in bursts of more than {spare + BURST_CORES_LIMIT:g} cores")
    per_sampler: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys([*samplers, *tails]):
        row = samplers.get(label) or {}
        why = []
        cores, share, tail = row.get("neighbour_cores"), row.get("burst_share"), tails.get(label)
        if cores is not None and cores - spare > NEIGHBOUR_CORES_LIMIT:
            why.append(f"neighbours took {cores:.2f} cores while it ran")
        if share is not None and share > BURST_SHARE_LIMIT:
            why.append(f"{100 * share:.0f}% of its time in bursts of > {spare + BURST_CORES_LIMIT:g} cores")
        if drifted:
            why.append(f"calibration drift {drift:.2f}x")
        machine = bool(why)
        if tail is not None and tail > TAIL_RATIO_LIMIT:
            why.append(f"chunk p99 {tail:.1f}x its p50")
        per_sampler[label] = {
            "neighbour_cores": cores,
            "burst_share": share,
            "tail_ratio": tail,
            "reasons": why,
            "machine": machine,
        }
    if any(p["machine"] for p in per_sampler.values()) and not reasons:
        hit = [label for label, p in per_sampler.items() if p["machine"]]
        reasons.append(f"neighbour CPU while {', '.join(hit)} ran")
    affected = [label for label, p in per_sampler.items() if p["reasons"]]
    verdict = "disturbed" if reasons else "suspect" if affected else "quiet"
    return {
        "verdict": verdict,
        "reasons": reasons,
        "affected": affected,
        "samplers": per_sampler,
        "thresholds": dict(THRESHOLDS),
        "measurements": dict(measurement),
    }


def warning_lines(disturbance: Mapping[str, Any] | None) -> list[str]:
    """The warning in plain lines (headline, reasons, affected samplers with why); [] for a quiet run."""
    if not disturbance or disturbance.get("verdict", "quiet") == "quiet":
        return []
    per = disturbance.get("samplers") or {}
    if disturbance["verdict"] == "disturbed":
        head = "the machine was busy during this run: latency figures are partly the neighbours'"
    else:
        head = "extreme latency tails with no neighbour seen: check them before quoting"
    lines = [head, *disturbance.get("reasons", [])]
    for label in disturbance.get("affected", []):
        lines.append(f"affected: {label} ({'; '.join(per.get(label, {}).get('reasons', []))})")
    return lines


def quiet_line(disturbance: Mapping[str, Any] | None) -> str | None:
    """One line for a quiet run: what was measured, against which limits."""
    if not disturbance or disturbance.get("verdict") != "quiet":
        return None
    m = disturbance.get("measurements") or {}
    neighbour, drift = m.get("neighbour_cores"), m.get("calibration_drift")
    tails = any(p.get("tail_ratio") is not None for p in (disturbance.get("samplers") or {}).values())
    return (
        "Machine quiet during the run: other processes took "
        + ("n/a" if neighbour is None else f"{neighbour:.2f}")
        + f" cores on average (limit {NEIGHBOUR_CORES_LIMIT}), calibration drift "
        + ("n/a" if drift is None else f"{drift:.2f}x")
        + f" (limit {DRIFT_LIMIT}x)"
        + (f", no sampler's chunk p99 above {TAIL_RATIO_LIMIT:g}x its p50." if tails else ".")
    )


__all__ = [
    "DisturbanceMonitor",
    "assess",
    "calibration_ms",
    "quiet_line",
    "read_cpu_counters",
    "tail_ratios",
    "warning_lines",
]
