"""A real-time runtime: the robot never waits for the policy (after its first chunk).

:class:`RealTimePolicy` wraps a policy with a background planner thread. Each ``select_action(obs)`` is one
control tick: it returns the action of the current plan for this tick and, when the plan is ``delay`` ticks
from running out, hands the planner the current observation history; the next chunk takes over on the first
tick after it arrives (``rtc``, ``async`` or ``blend``, as :mod:`policy_accel.policy.chunking` defines them).
Only the very first chunk is planned in the caller's thread. ``delay="auto"`` is what RTC does: the maximum of
the last few measured planning latencies, in ticks, re-estimated as chunks arrive. A plan that runs dry before
the next chunk arrives (an underrun) holds the last action and is counted; a chunk that arrives after its
assumed delay is counted late. A planner error is raised from the next ``select_action``.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

import numpy as np
import torch

from policy_accel.policy.chunking import (
    ASYNC_MODES,
    DEFAULT_GUIDANCE,
    DEFAULT_SPAN,
    Plan,
    PlanningCancelled,
    arrival_plan,
    check_delay_value,
    check_execution,
    check_guidance,
    check_mode,
    check_policy_supports,
    check_span,
    delay_steps,
    make_constraint,
    max_async_delay,
    rtc_target,
)
from policy_accel.policy.obs_validation import checked_step

SWITCH_INTERVAL_S = 1e-4  # the GIL hand-over interval while a runtime runs (restored on close)


def _percentiles_ms(seconds: Any) -> dict[str, float | None]:
    values = np.asarray(list(seconds), dtype=float) * 1e3
    if not len(values):
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(values.max()), "n": len(values)}


class RealTimePolicy:
    """``with RealTimePolicy(policy, control_hz=10) as rt: action = rt.select_action(obs)`` at the control rate.

    ``strategy``: ``"rtc"`` (real-time chunking, default), ``"async"`` or ``"blend"``. ``delay``: ``"auto"``
    (measured, the max of the last ``latency_window`` planning latencies in ticks) or a fixed number of ticks.
    ``guidance``: RTC's soft-guidance strength; ``guidance_span``: how many positions after the committed prefix
    it pulls toward the previous chunk (None: the whole overlap). Thread-safe; observations are copied."""

    def __init__(
        self,
        policy: Any,
        control_hz: float,
        strategy: str = "rtc",
        delay: int | str = "auto",
        latency_window: int = 5,
        guidance: float = DEFAULT_GUIDANCE,
        guidance_span: int | None = DEFAULT_SPAN,
    ) -> None:
        if (
            isinstance(control_hz, bool)
            or not isinstance(control_hz, (int, float))
            or not math.isfinite(control_hz)
            or control_hz <= 0
        ):
            raise ValueError(f"control_hz must be a positive finite number of ticks per second, got {control_hz!r}")
        self.strategy = check_mode(strategy, ASYNC_MODES, "strategy")
        self.fixed_delay = check_delay_value(delay, ("auto",))
        if isinstance(latency_window, bool) or not isinstance(latency_window, int) or latency_window < 1:
            raise ValueError(f"latency_window must be an integer >= 1, got {latency_window!r}")
        cfg = policy.config
        if self.fixed_delay != "auto":
            check_execution(self.strategy, int(self.fixed_delay), cfg.horizon, cfg.first_action, cfg.n_action_steps)
        check_policy_supports(policy, self.strategy)
        self.policy, self.control_hz, self.guidance = policy, float(control_hz), check_guidance(guidance)
        self.guidance_span = check_span(guidance_span)
        self.max_delay = max_async_delay(cfg.horizon, cfg.first_action, cfg.n_action_steps)
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._cancel = threading.Event()
        self._stop = False
        self._closed = False
        policy.__dict__["_cancel_event"] = self._cancel  # lets close() stop a solve at its next network call
        self._reset_state()
        self._all_latencies: list[float] = []
        # The planner's Python glue between torch ops holds the GIL; with CPython's default 5 ms switch interval
        # a control tick could wait that long for it. A short interval keeps select_action well under 1 ms.
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval, SWITCH_INTERVAL_S))
        self._thread = threading.Thread(target=self._run, name="policy-accel-planner", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> RealTimePolicy:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the planner thread (a solve in progress stops at its next network call) and wait for it."""
        with self._wake:
            self._stop = True
            self._closed = True
            self._wake.notify_all()
        self._cancel.set()
        self._thread.join(timeout)
        sys.setswitchinterval(self._switch_interval)
        if self.policy.__dict__.get("_cancel_event") is self._cancel:
            self.policy.__dict__.pop("_cancel_event", None)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode: drop the plan, the queues and any chunk in flight (waits for it to stop)."""
        self._cancel.set()
        with self._wake:
            self._episode += 1
            self._request = None
            while self._busy:
                self._wake.wait(0.01)
            self._reset_state(keep_stats=True)
        self._cancel.clear()
        self.policy.reset(seed)

    def _reset_state(self, keep_stats: bool = False) -> None:
        self._episode = getattr(self, "_episode", 0)
        self._history: deque[Any] = deque(maxlen=self.policy.config.n_obs_steps)
        self._plan: Plan | None = None
        self._first_started = False
        self._first_ready = threading.Event()
        self._executed: dict[int, np.ndarray] = {}
        self._tick = 0
        self._next_plan = 0
        self._in_flight = False
        self._busy = False
        self._request: tuple[Any, ...] | None = None
        self._result: tuple[Any, ...] | None = None
        self._error: BaseException | None = None
        self._last: np.ndarray | None = None
        self._chunks = 0
        self.last_tick_underrun = False  # whether the last select_action held the last command (an underrun)
        if not keep_stats:
            self._delays: Counter[int] = Counter()
            self._late = 0
            self._underruns = 0
            self._select_s: list[float] = []
            self._first_chunk_s: list[float] = []

    # ------------------------------------------------------------------ delay
    def current_delay(self) -> int:
        """The delay the next chunk is planned for, in ticks (clipped to what the strategy can execute)."""
        if self.fixed_delay != "auto":
            return int(self.fixed_delay)
        if not self._latencies:
            return 0
        return min(delay_steps(max(self._latencies), self.control_hz), self.max_delay)

    # ------------------------------------------------------------------ control tick
    @torch.inference_mode()
    def select_action(self, obs: Any) -> np.ndarray:
        """One control tick: ``obs`` (obs_dim,) or (B, obs_dim) in env units -> action(s) in env units.

        Waits only for the first chunk; afterwards it never waits on the network."""
        start = time.perf_counter()
        if self._closed:
            raise RuntimeError("select_action on a closed RealTimePolicy")
        cfg = self.policy.config
        batch, single = checked_step(cfg, obs)  # a copy
        first = False
        with self._lock:
            if self._error is not None:
                error, self._error = self._error, None
                raise error  # the planner's own exception, with its traceback
            if not self._history:
                self._history.extend([batch] * cfg.n_obs_steps)
            else:
                self._history.append(batch)
            first = self._plan is None and not self._first_started
            wait_first = self._plan is None and not first
            self._first_started = True
            history = self._stacked() if first else None
        if wait_first:  # another thread is planning the first chunk
            self._first_ready.wait()
        if first:  # the only wait on the network: nothing to execute before the first chunk
            t0 = time.perf_counter()
            chunk = self.policy.predict_action_chunk(history).cpu().numpy()
            latency = time.perf_counter() - t0
            with self._lock:
                self._latencies.append(latency)
                self._all_latencies.append(latency)
                self._plan = arrival_plan(self.strategy, None, chunk, self._tick, self._tick, cfg.first_action, 0)
                self._chunks = 1
                self._next_plan = self._tick + cfg.n_action_steps - self.current_delay()
            self._first_ready.set()
        with self._wake:
            t = self._tick
            if self._result is not None:
                chunk, planned_at, assumed, chunk_id = self._result
                self._result = None
                self._in_flight = False
                if t > planned_at + assumed:
                    self._late += 1
                self._plan = arrival_plan(self.strategy, self._plan, chunk, planned_at, t, cfg.first_action, chunk_id)
                self._next_plan = t + cfg.n_action_steps - self.current_delay()
            if not self._in_flight and t >= self._next_plan:
                delay = self.current_delay()
                self._delays[delay] += 1
                self._request = (self._stacked(), t, delay, self._plan, dict(self._executed), self._episode)
                self._in_flight = True
                self._wake.notify_all()
            self.last_tick_underrun = not (self._plan is not None and self._plan.covers(t))
            if not self.last_tick_underrun:
                action = self._plan.at(t)
            else:  # underrun: the next chunk is not there yet; hold the last command
                self._underruns += 1
                action = self._last
            self._last = action
            self._executed[t] = action
            self._executed.pop(t - cfg.horizon, None)
            self._tick += 1
            elapsed = time.perf_counter() - start
            (self._first_chunk_s if first else self._select_s).append(elapsed)
        action = np.array(action, dtype=np.float32)
        return action[0] if single else action

    def _stacked(self) -> Any:
        queued = list(self._history)
        if isinstance(queued[0], dict):
            return {k: torch.stack([q[k] for q in queued], dim=1) for k in queued[0]}
        return torch.stack(queued, dim=1)

    # ------------------------------------------------------------------ planner thread
    def _run(self) -> None:
        cfg = self.policy.config
        while True:
            with self._wake:
                while self._request is None and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                history, planned_at, delay, plan, executed, episode = self._request
                self._request = None
                self._busy = True
            try:
                with torch.inference_mode():
                    kwargs = {}
                    if self.strategy == "rtc":
                        target, hard, end = rtc_target(plan, executed, planned_at, delay, cfg.first_action, cfg.horizon)
                        kwargs["constraint"] = make_constraint(
                            self.policy, target, hard, end, self.guidance, self.guidance_span
                        )
                    t0 = time.perf_counter()
                    chunk = self.policy.predict_action_chunk(history, **kwargs).cpu().numpy()
                    latency = time.perf_counter() - t0
                with self._wake:
                    self._busy = False
                    if episode == self._episode and not self._stop:
                        self._chunks += 1
                        self._latencies.append(latency)
                        self._all_latencies.append(latency)
                        self._result = (chunk, planned_at, delay, self._chunks - 1)
                    self._wake.notify_all()
            except PlanningCancelled:
                with self._wake:
                    self._busy = False
                    self._in_flight = False
                    self._wake.notify_all()
            except BaseException as exc:  # raised from the next select_action, never lost
                with self._wake:
                    self._busy = False
                    self._in_flight = False
                    self._error = exc
                    self._wake.notify_all()

    # ------------------------------------------------------------------ stats
    @property
    def stats(self) -> dict[str, Any]:
        """Ticks, chunks, the delays used (ticks -> chunks), late chunks, underruns, planning latency and
        ``select_action`` latency percentiles (ms; the first call, which plans, apart)."""
        with self._lock:
            return {
                "strategy": self.strategy,
                "control_hz": self.control_hz,
                "ticks": self._tick,
                "chunks": self._chunks,
                "delay": self.current_delay(),
                "delays_used": dict(sorted(self._delays.items())),
                "late_chunks": self._late,
                "underruns": self._underruns,
                "planning_latency_ms": _percentiles_ms(self._all_latencies),
                "select_action_ms": _percentiles_ms(self._select_s),
                "first_select_action_ms": _percentiles_ms(self._first_chunk_s),
            }
