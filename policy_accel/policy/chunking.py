"""Executing action chunks while the next one is planned: the modes, their checks, and how chunks merge.

Shared by the simulated-latency evaluation (:mod:`policy_accel.eval.execution`) and the real-time runtime
(:mod:`policy_accel.policy.realtime`), so both execute the same schedule. Time is counted in control steps.
A chunk planned from the observation at step ``s`` covers steps ``s - first_action .. s - first_action +
horizon - 1`` (Diffusion Policy's alignment: position ``first_action`` is the action after the newest
observation). Each chunk runs ``n_action_steps`` actions (the execution horizon ``e``) before the next one
takes over; planning takes ``delay`` steps ``d``:

* ``sync``: the world waits while the policy plans (today's evaluation; no latency);
* ``blocking``: plan at the end of the execution window; the robot holds its last command for ``d`` steps,
  then executes the new chunk from position ``first_action`` (its actions are ``d`` steps stale);
* ``async``: planning starts ``d`` steps before the current window ends; on arrival, the new chunk's actions
  for steps already past are skipped and execution switches abruptly;
* ``blend``: as ``async``, but where the new chunk overlaps what is still queued the two are averaged
  ``0.3 * old + 0.7 * new``: LeRobot's async-inference default (``aggregate_fn_name="weighted_average"`` in
  ``src/lerobot/async_inference/configs.py``), applied to the queue as its robot client does;
* ``rtc``: as ``async``, with real-time chunking: the new chunk is sampled with its first ``first_action +
  d`` positions (steps already executed or executing while it plans) held to the committed actions and the
  rest of the overlap guided toward the previous chunk (:mod:`policy_accel.samplers.inpainting`).

The asynchronous modes need ``first_action + d + e <= horizon``: the chunk must still hold ``e`` actions
after skipping the ``d`` that ran while it was planned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policy_accel.samplers.base import standard_normal
from policy_accel.samplers.inpainting import MAX_GUIDANCE, InpaintConstraint, rtc_weights

MODES = ("sync", "blocking", "async", "blend", "rtc")
ASYNC_MODES = ("async", "blend", "rtc")
BLEND_OLD_WEIGHT = 0.3  # LeRobot async inference's default aggregate ("weighted_average": 0.3 old + 0.7 new)
DEFAULT_GUIDANCE = 4.0  # rtc soft-guidance strength (0: prefix replacement alone); 4 measured in docs/benchmarks.md
# rtc: positions after the committed prefix pulled toward the previous chunk (None: the whole overlap, RTC's
# schedule). 2 keeps the switch as smooth as the whole overlap and the reward of naive async; the whole overlap
# commits the chunk to a stale plan and loses reward (docs/benchmarks.md, "which guidance, and why").
DEFAULT_SPAN: int | None = 2


class PlanningCancelled(RuntimeError):
    """A solve stopped because its runtime is closing (raised from the denoiser, caught by the runtime)."""


def max_async_delay(horizon: int, first_action: int, n_action_steps: int) -> int:
    """The largest delay the asynchronous modes allow: ``horizon - first_action - n_action_steps``."""
    return horizon - first_action - n_action_steps


def check_mode(mode: Any, allowed: tuple[str, ...] = MODES, what: str = "execution") -> str:
    """A known mode name, else a ValueError naming the choices."""
    if not isinstance(mode, str) or mode not in allowed:
        raise ValueError(f"{what} must be one of {list(allowed)}, got {mode!r}")
    return mode


def check_delay_value(delay: Any, words: tuple[str, ...] = ("measured",)) -> int | str:
    """An integer number of control steps >= 0, or one of ``words``; anything else is a ValueError."""
    if isinstance(delay, str) and delay in words:
        return delay
    if isinstance(delay, bool) or not isinstance(delay, (int, np.integer)) or delay < 0:
        choices = " or ".join(repr(w) for w in words)
        raise ValueError(
            f"delay must be an integer number of control steps >= 0{' or ' + choices if words else ''}, got {delay!r}"
        )
    return int(delay)


def check_span(span: Any) -> int | None:
    """rtc's guidance span: an integer >= 0 (positions after the committed prefix) or None (the whole overlap)."""
    if span is None:
        return None
    if isinstance(span, bool) or not isinstance(span, (int, np.integer)) or span < 0:
        raise ValueError(f"rtc guidance span must be an integer >= 0 or None (the whole overlap), got {span!r}")
    return int(span)


def check_guidance(guidance: Any) -> float:
    if (
        isinstance(guidance, bool)
        or not isinstance(guidance, (int, float))
        or not 0.0 <= float(guidance) <= MAX_GUIDANCE
    ):
        raise ValueError(f"rtc guidance must be a number in [0, {MAX_GUIDANCE}], got {guidance!r}")
    return float(guidance)


def check_execution(mode: str, delay: int, horizon: int, first_action: int, n_action_steps: int) -> None:
    """Refuse a delay the mode cannot execute, naming the numbers (before any work)."""
    check_mode(mode)
    limit = max_async_delay(horizon, first_action, n_action_steps)
    if mode in ASYNC_MODES and delay > limit:
        raise ValueError(
            f"delay={delay} does not fit execution={mode}: a {horizon}-step chunk whose executed actions start at "
            f"position {first_action} and run {n_action_steps} steps leaves room for at most delay={limit} "
            f"(first_action + delay + n_action_steps <= horizon: {first_action} + {delay} + {n_action_steps} > "
            f"{horizon}); only execution=blocking or sync are possible at this delay (or use a faster sampler)"
        )


def delay_steps(latency_s: float, control_hz: float) -> int:
    """A planning latency in control steps, rounded up (a chunk late by a fraction of a step misses it)."""
    if not control_hz > 0:
        raise ValueError(f"control_hz must be > 0, got {control_hz!r}")
    return max(0, math.ceil(latency_s * control_hz - 1e-9))


def next_planning_step(mode: str, arrival: int, delay: int, n_action_steps: int) -> int:
    """When the chunk after one that started executing at ``arrival`` is planned: at the end of its execution
    window (blocking), or ``delay`` steps before it (asynchronous modes)."""
    return arrival + n_action_steps - (delay if mode in ASYNC_MODES else 0)


@dataclass
class Plan:
    """The actions queued for steps ``start .. start + len - 1`` (``actions`` (B, L, D), env units), tagged
    with the chunk they came from."""

    start: int
    actions: np.ndarray
    chunk_id: int

    @property
    def end(self) -> int:
        return self.start + self.actions.shape[1]

    def covers(self, step: int) -> bool:
        return self.start <= step < self.end

    def at(self, step: int) -> np.ndarray:
        return self.actions[:, step - self.start]


def arrival_plan(
    mode: str, old: Plan | None, chunk: np.ndarray, planned_at: int, arrival: int, first_action: int, chunk_id: int
) -> Plan:
    """What executes from step ``arrival`` on when ``chunk`` (B, H, D), planned at ``planned_at``, arrives.

    ``blocking`` starts at the chunk's first executed position however stale; the asynchronous modes skip
    the positions whose steps are past; ``blend`` averages with the old plan where both have an action."""
    if mode == "blocking" or mode == "sync":
        return Plan(arrival, chunk[:, first_action:], chunk_id)
    offset = arrival - planned_at + first_action
    actions = chunk[:, min(offset, chunk.shape[1]) :]
    if mode == "blend" and old is not None:
        actions = actions.copy()
        overlap = max(0, min(old.end, arrival + actions.shape[1]) - arrival)
        if overlap:
            old_part = old.actions[:, arrival - old.start : arrival - old.start + overlap]
            actions[:, :overlap] = BLEND_OLD_WEIGHT * old_part + (1.0 - BLEND_OLD_WEIGHT) * actions[:, :overlap]
    return Plan(arrival, actions, chunk_id)


def rtc_target(
    plan: Plan, executed: dict[int, np.ndarray], planned_at: int, delay: int, first_action: int, horizon: int
) -> tuple[np.ndarray, int, int]:
    """The previous plan at a new chunk's positions: ``(target (B, H, D), hard, end)``.

    Position j is step ``planned_at - first_action + j``: steps before ``planned_at`` come from the executed
    actions, later ones from ``plan``. ``hard = first_action + delay`` positions are committed (executed, or
    executing while the chunk plans); ``end`` is where the previous plan stops. Steps before the episode's
    first action take the first executed action; committed steps the plan does not reach (a real-time loop
    whose plan runs dry) take the last command, which the robot holds then."""
    batch, dim = plan.actions.shape[0], plan.actions.shape[2]
    target = np.zeros((batch, horizon, dim), dtype=plan.actions.dtype)
    origin = planned_at - first_action
    hard = first_action + delay
    earliest = min(executed) if executed else None
    end = 0
    for j in range(horizon):
        step = origin + j
        if step < planned_at and step in executed:
            target[:, j] = executed[step]
        elif step < planned_at and earliest is not None and step < earliest:
            target[:, j] = executed[earliest]
        elif plan.covers(step):
            target[:, j] = plan.at(step)
        elif j < hard and j > 0:  # held while the plan is dry
            target[:, j] = target[:, j - 1]
        elif j < hard:
            target[:, j] = plan.actions[:, 0]
        else:
            break
        end = j + 1
    return target, hard, end


def make_constraint(
    policy: Any,
    target: np.ndarray,
    hard: int,
    end: int,
    guidance: float = DEFAULT_GUIDANCE,
    span: int | None = DEFAULT_SPAN,
) -> InpaintConstraint:
    """The sampler's constraint from a target in env units: normalised like the policy's actions, with the
    prefix noise drawn from the policy's generator (one draw per chunk: deterministic for a seed); ``span``
    positions after the prefix are guided (None: the whole overlap)."""
    horizon = target.shape[1]
    device = policy.device
    normalised = policy.normalizer.normalize("action", torch.as_tensor(target, dtype=torch.float32, device=device))
    noise = standard_normal(tuple(target.shape), policy.generator, torch.float32, device)
    weights = rtc_weights(hard, end, horizon, span).to(device)
    return InpaintConstraint(normalised, hard, weights, noise, float(guidance))


def check_policy_supports(policy: Any, mode: str) -> None:
    """``rtc`` needs a sampler that takes a constraint; say which, before any work."""
    if mode == "rtc" and not getattr(policy.sampler, "supports_inpainting", False):
        raise ValueError(
            f"execution=rtc needs a sampler that supports inpainting (every built-in one does); "
            f"{policy.sampler.name} ({type(policy.sampler).__name__}) does not: set supports_inpainting and "
            "take constraint= in its sample()"
        )
