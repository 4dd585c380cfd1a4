"""The ``execution``, ``delay``, ``rtc_guidance`` and ``rtc_span`` options of ``eval`` and ``bench``: checked before any work.

``eval`` takes one mode and one delay; ``bench`` also takes lists, crossed with every sampler entry (a delay
sweep is one bench run). Whether a delay fits a mode depends on the checkpoint's chunk, so that check runs once
the checkpoint is loaded, still before any episode.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from policy_accel.policy.chunking import MODES
from policy_accel.samplers.inpainting import MAX_GUIDANCE


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _delay_ok(value: Any) -> bool:
    return value == "measured" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def execution_option(value: Any) -> str | None:
    return None if value in MODES else f"one of {list(MODES)}"


def delay_option(value: Any) -> str | None:
    return None if _delay_ok(value) else "an integer number of control steps >= 0, or measured"


def execution_list_option(value: Any) -> str | None:
    value = _plain(value)
    items = value if isinstance(value, list) else [value]
    return None if items and all(v in MODES for v in items) else f"one of {list(MODES)}, or a non-empty list of them"


def delay_list_option(value: Any) -> str | None:
    value = _plain(value)
    items = value if isinstance(value, list) else [value]
    ok = items and all(_delay_ok(v) for v in items)
    return None if ok else "an integer number of control steps >= 0, measured, or a non-empty list of them"


def span_option(value: Any) -> str | None:
    ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
    return None if ok else "an integer >= 0 (positions after the committed prefix) or null (the whole overlap)"


def guidance_option(value: Any) -> str | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= MAX_GUIDANCE
    return None if ok else f"a number in [0, {MAX_GUIDANCE:g}]"


EVAL_EXECUTION_CHECKS = {
    "execution": execution_option,
    "delay": delay_option,
    "rtc_guidance": guidance_option,
    "rtc_span": span_option,
}
BENCH_EXECUTION_CHECKS = {
    "execution": execution_list_option,
    "delay": delay_list_option,
    "rtc_guidance": guidance_option,
    "rtc_span": span_option,
}


def check_execution_fits(cfg: Any, policy: Any, command: str) -> None:
    """``SystemExit`` naming the numbers when an integer delay cannot run in the mode with this checkpoint's
    chunk, or when ``rtc`` meets a sampler without inpainting (before any episode)."""
    from policy_accel.eval.execution import check_execution_options
    from policy_accel.policy.chunking import check_policy_supports

    try:
        check_execution_options(cfg.execution, cfg.delay, policy.config)
        check_policy_supports(policy, cfg.execution)
    except ValueError as exc:
        raise SystemExit(f"policy-accel {command}: {exc}") from None


def execution_kwargs(cfg: Any) -> dict[str, Any]:
    """The rollout's execution keywords from a checked ``eval`` config."""
    kwargs: dict[str, Any] = {"execution": str(cfg.execution), "delay": cfg.delay}
    if cfg.execution == "rtc":
        kwargs["guidance"] = float(cfg.rtc_guidance)
        kwargs["span"] = None if cfg.rtc_span is None else int(cfg.rtc_span)
    return kwargs
