"""Evaluation under latency: the execution modes on a simulated, deterministic clock.

A robot's physics does not wait for the policy. Here, during each planning the environment advances exactly
``delay`` control steps with the actions the mode prescribes (:mod:`policy_accel.policy.chunking` defines the
modes), whatever the wall clock did: the chunk is computed at once from the observation at the planning step
and only *takes effect* ``delay`` steps later. Same seeds and settings give identical results run to run.
The first chunk of an episode is planned with the world paused, in every mode (a robot waits for its first
chunk before it moves, as :class:`~policy_accel.policy.realtime.RealTimePolicy` does).

``delay="measured"`` is the sampler's median chunk latency on this machine (one observation, the policy's
thread setting), converted with the env's control rate and rounded up (:func:`measure_delay`).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policy_accel.eval.results import Timing
from policy_accel.eval.results import smoothness_summary as jump_summary
from policy_accel.policy.chunking import (
    ASYNC_MODES,
    DEFAULT_GUIDANCE,
    DEFAULT_SPAN,
    MODES,
    Plan,
    arrival_plan,
    check_delay_value,
    check_execution,
    check_guidance,
    check_mode,
    check_policy_supports,
    check_span,
    delay_steps,
    make_constraint,
    next_planning_step,
    rtc_target,
)
from policy_accel.policy.obs_validation import checked_step
from policy_accel.policy.warmup import calibrate_with_cache, torch_threads


def check_execution_options(
    execution: Any, delay: Any, config: Any | None = None, words: tuple[str, ...] = ("measured",)
) -> tuple[str, int | str]:
    """Validate ``execution`` and ``delay`` (and, for an integer delay and a policy config, that the mode can
    execute it); returns them normalised. Errors name the numbers, before any work."""
    mode = check_mode(execution)
    value = check_delay_value(delay, words)
    if config is not None and isinstance(value, int):
        check_execution(mode, value, config.horizon, config.first_action, config.n_action_steps)
    return mode, value


def measure_latency_s(policy: Any, repeats: int = 5) -> float:
    """Median wall time of one chunk for one observation (after a warm-up chunk), with the policy's sampler
    and thread setting; uses its own generator, so the policy's stays untouched."""
    cfg = policy.config
    shape = (1, cfg.horizon, cfg.action_dim)
    generator = torch.Generator().manual_seed(12345)
    times = []
    with torch.inference_mode(), torch_threads(policy.threads):
        cond = policy.neutral_cond(1)
        if policy.sampler.needs_calibration:
            calibrate_with_cache(policy, cond, shape)
        policy.sampler.to(policy.device)
        for i in range(repeats + 1):
            start = time.perf_counter()
            policy.sampler.sample(policy.denoise, cond, shape, generator=generator)
            if policy.device.type == "cuda":
                torch.cuda.synchronize(policy.device)
            if i:  # the first is the warm-up
                times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_delay(policy: Any, control_hz: float, repeats: int = 5) -> tuple[int, float]:
    """``(delay in control steps, median chunk latency in ms)`` of the policy's sampler on this machine."""
    latency = measure_latency_s(policy, repeats)
    return delay_steps(latency, control_hz), 1e3 * latency


@dataclass
class JumpLog:
    """The jumps between consecutive commanded actions (L2 norm, env units): at chunk switches and within a
    chunk. A smooth execution's switch jumps look like its within-chunk steps."""

    switch: list[float] = field(default_factory=list)
    within: list[float] = field(default_factory=list)

    def record(self, previous: np.ndarray, action: np.ndarray, switched: bool, active: np.ndarray) -> None:
        jumps = np.linalg.norm(np.asarray(action, dtype=float) - np.asarray(previous, dtype=float), axis=-1)
        (self.switch if switched else self.within).extend(float(j) for j in jumps[active])

    def extend(self, other: JumpLog) -> None:
        self.switch += other.switch
        self.within += other.within


def smoothness_summary(jumps: JumpLog) -> dict[str, Any]:
    """Mean and p95 of the action jumps at chunk switches and within chunks."""
    return jump_summary(jumps.switch, jumps.within)


class SyncExecution:
    """Today's loop: ``policy.select_action`` with the world paused while it plans."""

    mode = "sync"

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.switched = False

    def reset(self) -> None:
        self.switched = False

    def act(self, obs: Any, timing: Timing) -> np.ndarray:
        before = self.policy.last_stats
        start = time.perf_counter()
        action = self.policy.select_action(obs)
        elapsed = time.perf_counter() - start
        self.switched = self.policy.last_stats is not before
        if self.switched:
            timing.chunk_s.append(elapsed)
            timing.stats.append(self.policy.last_stats)
        else:
            timing.pop_s.append(elapsed)
        return np.asarray(action)


class DelayedExecution:
    """``blocking``, ``async``, ``blend`` or ``rtc`` with a fixed delay, on the simulated clock (one batch of
    sub-envs in lockstep: one step per :meth:`act`). Call :meth:`reset` after the policy's reset at each batch."""

    def __init__(
        self,
        policy: Any,
        mode: str,
        delay: int,
        guidance: float = DEFAULT_GUIDANCE,
        span: int | None = DEFAULT_SPAN,
    ) -> None:
        cfg = policy.config
        check_execution(mode, delay, cfg.horizon, cfg.first_action, cfg.n_action_steps)
        check_policy_supports(policy, mode)
        if mode == "sync":
            raise ValueError("sync runs through SyncExecution")
        self.policy, self.mode, self.delay, self.guidance = policy, mode, int(delay), check_guidance(guidance)
        self.span = check_span(span)
        self.reset()

    def reset(self) -> None:
        self.step = 0
        self.history: deque[Any] = deque(maxlen=self.policy.config.n_obs_steps)
        self.plan: Plan | None = None
        self.pending: tuple[np.ndarray, int, int, int] | None = None  # chunk, planned at, arrival, id
        self.next_plan = 0
        self.executed: dict[int, np.ndarray] = {}
        self.last: np.ndarray | None = None
        self.last_id = -1
        self.chunks = 0
        self.switched = False

    def _history(self) -> Any:
        queued = list(self.history)
        if isinstance(queued[0], dict):
            return {k: torch.stack([q[k] for q in queued], dim=1) for k in queued[0]}
        return torch.stack(queued, dim=1)

    def _plan(self, timing: Timing, constraint: Any = None) -> np.ndarray:
        kwargs = {"constraint": constraint} if constraint is not None else {}
        start = time.perf_counter()
        chunk = self.policy.predict_action_chunk(self._history(), **kwargs)
        timing.chunk_s.append(time.perf_counter() - start)
        timing.stats.append(self.policy.last_stats)
        self.chunks += 1
        return chunk.cpu().numpy()

    def act(self, obs: Any, timing: Timing) -> np.ndarray:
        cfg = self.policy.config
        batch, single = checked_step(cfg, obs)  # a copy, as select_action keeps
        chunks_before = self.chunks
        if not self.history:
            self.history.extend([batch] * cfg.n_obs_steps)
        else:
            self.history.append(batch)
        t = self.step
        if self.plan is None:  # the first chunk: the world waits (the robot has nothing to execute yet)
            chunk = self._plan(timing)
            self.plan = arrival_plan(self.mode, None, chunk, t, t, cfg.first_action, self.chunks)
            self.next_plan = next_planning_step(self.mode, t, self.delay, cfg.n_action_steps)
        if self.pending is None and t == self.next_plan:
            constraint = None
            if self.mode == "rtc":
                target, hard, end = rtc_target(self.plan, self.executed, t, self.delay, cfg.first_action, cfg.horizon)
                constraint = make_constraint(self.policy, target, hard, end, self.guidance, self.span)
            self.pending = (self._plan(timing, constraint), t, t + self.delay, self.chunks)
        if self.pending is not None and t == self.pending[2]:
            chunk, planned_at, arrival, chunk_id = self.pending
            self.plan = arrival_plan(self.mode, self.plan, chunk, planned_at, arrival, cfg.first_action, chunk_id)
            self.pending = None
            self.next_plan = next_planning_step(self.mode, arrival, self.delay, cfg.n_action_steps)
        if self.mode == "blocking" and self.pending is not None:  # holding the last command while planning
            action, chunk_id = self.last, self.last_id
        else:
            if not self.plan.covers(t):
                raise RuntimeError(f"{self.mode}: no action planned for step {t} (a schedule bug)")
            action, chunk_id = self.plan.at(t), self.plan.chunk_id
        self.switched = t > 0 and chunk_id != self.last_id
        self.last, self.last_id = action, chunk_id
        self.executed[t] = action
        self.executed.pop(t - cfg.horizon, None)
        self.step += 1
        if self.chunks == chunks_before:  # a step that only read the plan (planning steps are timed above)
            timing.pop_s.append(0.0)
        action = np.array(action, dtype=np.float32)
        return action[0] if single else action


def make_execution(
    policy: Any,
    execution: str = "sync",
    delay: int = 0,
    guidance: float = DEFAULT_GUIDANCE,
    span: int | None = DEFAULT_SPAN,
) -> SyncExecution | DelayedExecution:
    """The executor of a mode at an integer delay (``sync`` ignores the delay: the world waits)."""
    check_mode(execution)
    delay = check_delay_value(delay, ())
    if execution == "sync":
        return SyncExecution(policy)
    return DelayedExecution(policy, execution, int(delay), guidance, span)


__all__ = [
    "ASYNC_MODES",
    "MODES",
    "DelayedExecution",
    "JumpLog",
    "SyncExecution",
    "check_execution_options",
    "make_execution",
    "measure_delay",
    "smoothness_summary",
]
