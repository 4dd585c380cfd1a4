"""Latency/reward benchmark of many samplers on the same seeds, interleaved batch by batch.

Running sampler A on all seeds and then sampler B lets machine drift (thermal state, a
neighbour's job, frequency scaling) land on one sampler only. Here every seed batch is
run by every sampler back to back, in an order rotated per batch, and the per-batch
results are pooled afterwards; latency percentiles come from the pooled raw per-chunk
latencies, not from averaging per-batch percentiles. Each sampler is built once, so a
Picard sampler with ``window: auto`` calibrates once and keeps its window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from policy_accel.device import device_info
from policy_accel.eval.disturbance import DisturbanceMonitor, assess, tail_ratios, warning_lines
from policy_accel.eval.execution import check_execution_options, measure_delay
from policy_accel.eval.families import family_for
from policy_accel.eval.machine import machine_info
from policy_accel.eval.results import add_speedups, merge_results, paired_difference
from policy_accel.eval.rollout import evaluate_policy
from policy_accel.policy.chunking import DEFAULT_GUIDANCE, DEFAULT_SPAN, check_execution, check_guidance, check_span
from policy_accel.samplers import Sampler, StudentSampler, build_sampler

# a bench entry's execution options (not the sampler's)
EXECUTION_KEYS = ("execution", "delay", "rtc_guidance", "rtc_span")


class BenchSpecError(ValueError):
    """A benchmark sampler entry that cannot be built or does not fit the policy."""


@dataclass
class BenchEntry:
    """A sampler built once for the whole benchmark, with the spec it came from."""

    label: str
    spec: dict[str, Any]
    sampler: Sampler
    warm_start: bool = False  # a policy option, not the sampler's: reuse the last chunk's solution
    compile: bool | str = False  # a policy option: the denoiser's compile backend for this entry (cached per mode)
    execution: str = "sync"  # how chunks execute under latency (eval/execution.py); sync: the world waits
    delay: int | str = 0  # control steps of planning latency, or "measured" (resolved once before the rollouts)
    guidance: float = DEFAULT_GUIDANCE  # rtc's soft-guidance strength
    span: int | None = DEFAULT_SPAN  # rtc: positions after the committed prefix it guides (None: the whole overlap)
    measured_ms: float | None = None  # the median chunk latency behind a measured delay


def _plain(spec: Any) -> dict[str, Any]:
    """A sampler spec (name string, mapping or DictConfig) as a plain dict."""
    if isinstance(spec, str):
        return {"name": spec}
    if isinstance(spec, DictConfig):
        return OmegaConf.to_container(spec, resolve=True)  # type: ignore[return-value]
    if isinstance(spec, Mapping):
        return dict(spec)
    raise BenchSpecError(f"a benchmark sampler must be a name or a mapping, got {type(spec).__name__}")


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, DictConfig) or hasattr(value, "_content"):
        value = OmegaConf.to_container(value, resolve=True)
    return list(value) if isinstance(value, (list, tuple)) else [value]


def execution_variants(
    spec: Mapping[str, Any], default_execution: Any, default_delay: Any, default_guidance: Any, config: Any
) -> tuple[list[tuple[str, int | str, float]], list[str]]:
    """The (mode, delay, guidance) runs of one bench entry: its own ``execution``/``delay``/``rtc_guidance``
    (a value or a list) or the bench's, crossed; sync once (it ignores the delay). Integer delays a mode
    cannot execute come back as notes (a sweep crosses every mode with every delay)."""
    runs, notes = [], []
    guidance = check_guidance(spec.get("rtc_guidance", default_guidance))
    for mode in _as_list(spec.get("execution", default_execution)):
        for delay in _as_list(spec.get("delay", default_delay)):
            try:
                mode, delay = check_execution_options(mode, delay)
                if mode == "sync":
                    delay = 0
                if isinstance(delay, int):
                    check_execution(mode, delay, config.horizon, config.first_action, config.n_action_steps)
            except ValueError as exc:
                if "does not fit" not in str(exc):
                    raise BenchSpecError(f"sampler {dict(spec)}: {exc}") from exc
                notes.append(str(exc))
                continue
            if (mode, delay, guidance) not in runs:
                runs.append((mode, delay, guidance))
    return runs, notes


def variant_label(base: str, mode: str, delay: int | str, guidance: float, default_guidance: float) -> str:
    """``ddim-10`` for sync, ``ddim-10/rtc/d4`` (``/g2.0`` for a non-default rtc guidance) otherwise."""
    if mode == "sync":
        return base
    suffix = f"/g{guidance:g}" if mode == "rtc" and guidance != default_guidance else ""
    return f"{base}/{mode}/d{delay}{suffix}"


def prepare_samplers(
    policy: Any,
    specs: Sequence[Any],
    default_compile: bool | str = False,
    default_execution: Any = "sync",
    default_delay: Any = 0,
    default_guidance: float = DEFAULT_GUIDANCE,
    default_span: int | None = DEFAULT_SPAN,
) -> tuple[list[BenchEntry], list[dict[str, Any]]]:
    """Build every spec once; skip (and report why) entries whose weights are not there yet.

    Skipped: a spec whose ``checkpoint`` file does not exist (a student not distilled yet), and a
    student distilled for another policy (checked by attaching it): the default list's students
    belong to the shipped teacher, so another checkpoint (e.g. a LeRobot folder) benches the rest.
    Any other bad spec raises :class:`BenchSpecError`.
    """
    entries: list[BenchEntry] = []
    skipped: list[dict[str, Any]] = []
    for raw in specs:
        spec = _plain(raw)
        checkpoint = spec.get("checkpoint")
        if checkpoint is not None and not Path(str(checkpoint)).is_file():
            skipped.append({"spec": spec, "reason": f"checkpoint '{checkpoint}' not found"})
            continue
        options = {k: v for k, v in spec.items() if k not in ("warm_start", "compile", *EXECUTION_KEYS)}
        warm_start = spec.get("warm_start", False)
        if not isinstance(warm_start, bool):
            raise BenchSpecError(f"sampler {spec}: warm_start must be true or false, got {warm_start!r}")
        compile_mode = spec.get("compile", default_compile)
        if not (isinstance(compile_mode, bool) or compile_mode in ("freeze", "inductor", "reduce-overhead")):
            raise BenchSpecError(
                f"sampler {spec}: compile must be true, false, freeze, inductor or "
                f"reduce-overhead, got {compile_mode!r}"
            )
        try:
            sampler = build_sampler(
                options,
                policy.config.noise_scheduler,
                default_guess_checkpoint=getattr(policy, "default_guess_checkpoint", None),
            )
        except (ValueError, TypeError) as exc:
            raise BenchSpecError(f"sampler {spec}: {exc}") from exc
        previous = policy.sampler
        try:
            policy.set_sampler(sampler)  # raises if a student does not fit this policy
        except ValueError as exc:
            if isinstance(sampler, StudentSampler):  # a student of another teacher
                skipped.append({"spec": spec, "reason": f"does not fit this policy: {exc}"})
                continue
            raise BenchSpecError(f"sampler {spec}: {exc}") from exc
        finally:
            policy.set_sampler(previous)
        suffix = ("+warm" if warm_start else "") + (
            f"+{compile_mode}" if isinstance(compile_mode, str) else "+compiled" if compile_mode else ""
        )
        base = str(spec.get("label") or (sampler.name + suffix))
        try:
            runs, notes = execution_variants(spec, default_execution, default_delay, default_guidance, policy.config)
        except ValueError as exc:
            raise BenchSpecError(f"sampler {spec}: {exc}") from exc
        skipped += [{"spec": spec, "reason": note} for note in notes]
        try:
            span = check_span(spec.get("rtc_span", default_span))
        except ValueError as exc:
            raise BenchSpecError(f"sampler {spec}: {exc}") from exc
        for mode, delay, guidance in runs:
            label = variant_label(base, mode, delay, guidance, float(default_guidance))
            if mode == "rtc" and span != default_span:
                label += f"/s{'all' if span is None else span}"
            if any(e.label == label for e in entries):
                raise BenchSpecError(f"two benchmark samplers are both labelled '{label}'; give one a 'label'")
            entries.append(BenchEntry(label, spec, sampler, warm_start, compile_mode, mode, delay, guidance, span))
    return entries, skipped


def resolve_measured_delays(
    policy: Any, entries: list[BenchEntry], env_cfg: Any, max_steps: int
) -> tuple[list[BenchEntry], list[dict[str, Any]]]:
    """Measure each sampler's chunk latency once (one observation, its compile backend) where an entry asks
    for ``delay: measured``, convert it with the env's control rate, and drop (with a note) the modes that
    cannot execute that delay."""
    family = family_for(env_cfg)
    control_hz = family.control_hz(family.setup(policy.config, env_cfg, max_steps).env_id)
    measured: dict[int, tuple[int, float]] = {}
    kept, notes = [], []
    previous = policy.sampler
    try:
        for entry in entries:
            if entry.delay != "measured":
                kept.append(entry)
                continue
            key = id(entry.sampler)
            if key not in measured:
                policy.set_sampler(entry.sampler)
                policy.compile(entry.compile)
                measured[key] = measure_delay(policy, control_hz)
                print(f"bench: {entry.sampler.name}: {measured[key][1]:.1f} ms a chunk = {measured[key][0]} steps")
            entry.delay, entry.measured_ms = measured[key]
            cfg = policy.config
            try:
                check_execution(entry.execution, entry.delay, cfg.horizon, cfg.first_action, cfg.n_action_steps)
            except ValueError as exc:
                notes.append({"spec": entry.spec, "label": entry.label, "reason": str(exc)})
                continue
            kept.append(entry)
    finally:
        policy.set_sampler(previous)
    return kept, notes


def _check_pairs(pairs: Sequence[Sequence[str]]) -> None:
    for pair in pairs:
        if isinstance(pair, str) or len(pair) != 2:
            raise BenchSpecError(f"a comparison must be a pair [label_a, label_b], got {pair!r}")


def compare_pairs(
    results: Sequence[Mapping[str, Any]], pairs: Sequence[Sequence[str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Paired differences for each ``[label_a, label_b]``; pairs naming a sampler that is not
    in this run (e.g. its checkpoint was skipped) come back as notes, never silently dropped."""
    _check_pairs(pairs)
    by_label = {r["label"]: r for r in results}
    comparisons, notes = [], []
    for pair in pairs:
        a, b = (str(x) for x in pair)
        missing = [x for x in (a, b) if x not in by_label]
        if missing:
            notes.append(
                {"pair": [a, b], "reason": f"no sampler labelled {missing} in this run; labels: {sorted(by_label)}"}
            )
            continue
        comparisons.append(paired_difference(by_label[a], by_label[b]))
    return comparisons, notes


def run_benchmark(
    policy: Any,
    samplers: Sequence[Any],
    env_cfg: Any,
    seeds: Sequence[int],
    n_envs: int,
    max_steps: int,
    progress: bool = True,
    checkpoint: str | None = None,
    compare: Sequence[Sequence[str]] = (),
    compile: bool | str = False,
    execution: Any = "sync",
    delay: Any = 0,
    rtc_guidance: float = DEFAULT_GUIDANCE,
    rtc_span: int | None = DEFAULT_SPAN,
) -> dict[str, Any]:
    """Every sampler on every seed batch (order rotated per batch), pooled per sampler.

    ``samplers`` are specs for :func:`build_sampler` (optionally with ``label``); the first
    one that is available is the baseline of the speed-ups. ``compare`` lists label pairs
    whose seed-paired reward difference the report gives (e.g. a student vs DDIM at the
    same step count). ``compile`` is every entry's default compile backend (an entry's own
    ``compile`` key overrides it; DDPM-100 eager beside ParaDDPM compiled, say). Returns a JSON-able dict with ``results`` (one pooled result per
    sampler, in the given order), ``baseline``, ``comparisons``, ``skipped``,
    ``batch_orders``, ``machine``, ``disturbance`` (whether the machine was busy while it ran, and
    which samplers' figures that touched: :mod:`policy_accel.eval.disturbance`), ``seeds``, ``n_envs``
    and ``checkpoint``.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("run_benchmark needs at least one seed")
    if int(n_envs) < 1 or int(max_steps) < 1:
        raise ValueError(f"n_envs and max_steps must be >= 1, got {n_envs} and {max_steps}")
    n_envs, max_steps = int(n_envs), int(max_steps)
    _check_pairs(compare)  # before the long run, not after it
    entries, skipped = prepare_samplers(policy, samplers, compile, execution, delay, rtc_guidance, rtc_span)
    for entry in entries:  # compile every backend once, now, outside the timed rollouts
        policy.compile(entry.compile)
    entries, not_fitting = resolve_measured_delays(policy, entries, env_cfg, max_steps)
    skipped += not_fitting
    policy.compile(False)
    for note in skipped:
        print(f"bench: skipping sampler {note['spec']}: {note['reason']}")
    if not entries:
        raise ValueError("no sampler left to benchmark")

    batches = [seeds[i : i + n_envs] for i in range(0, len(seeds), n_envs)]
    parts: dict[str, list[dict[str, Any]]] = {e.label: [] for e in entries}
    orders: list[list[str]] = []
    family = family_for(env_cfg)
    monitor = DisturbanceMonitor()  # the machine's load while the timed rollouts run (eval/disturbance.py)
    with monitor, tqdm(total=len(batches) * len(entries), desc="bench", unit="run", disable=not progress) as pbar:
        for index, batch in enumerate(batches):
            shift = index % len(entries)
            order = entries[shift:] + entries[:shift]
            orders.append([e.label for e in order])
            for entry in order:
                pbar.set_postfix_str(f"batch {index + 1}/{len(batches)} {entry.label}")
                policy.compile(entry.compile)  # cached: switching backends costs nothing after the first
                with monitor.span(entry.label):
                    parts[entry.label].append(
                        evaluate_policy(
                            policy,
                            sampler=entry.sampler,
                            env_cfg=env_cfg,
                            seeds=batch,
                            n_envs=n_envs,
                            progress=False,
                            max_steps=max_steps,
                            warm_start=entry.warm_start,
                            execution=entry.execution,
                            delay=entry.delay,
                            guidance=entry.guidance,
                            span=entry.span,
                        )
                    )
                pbar.update()

    results = []
    for entry in entries:
        result = family.summarise(merge_results(parts[entry.label]))  # Meta-World: success per task, their mean
        result.update(
            label=entry.label,
            sampler=entry.label,
            sampler_spec=entry.spec,
            compile=entry.compile,
            calibration=entry.sampler.calibration,
            delay_measured_ms=entry.measured_ms,
        )
        result.pop("action_jumps", None)  # pooled into "smoothness"; the raw jumps would swell the report
        results.append(result)
    add_speedups(results)
    disturbance = assess(monitor.stop(), tail_ratios(results))
    for line in warning_lines(disturbance):  # a disturbed run is said, never silently reported
        print(f"bench: WARNING: {line}")
    comparisons, comparison_notes = compare_pairs(results, compare)
    for note in comparison_notes:
        print(f"bench: no comparison {note['pair']}: {note['reason']}")
    return {
        "results": results,
        "baseline": entries[0].label,
        "comparisons": comparisons,
        "skipped": skipped + comparison_notes,
        "batch_orders": orders,
        "machine": machine_info(),
        "device": device_info(policy.device),
        "disturbance": disturbance,
        "seeds": seeds,
        "n_envs": n_envs,
        "max_steps": max_steps,
        "checkpoint": checkpoint,
    }
