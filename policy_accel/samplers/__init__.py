"""Samplers: every way of turning noise into an action chunk, subclasses of one base class (:class:`Sampler`).

Names: ``ddpm``, ``ddim``, ``dpmsolver`` (sequential solvers) and ``paraddpm``,
``paraddim``, ``paradpmsolver`` (their Picard-parallel versions; ``picard`` is an
alias of ``paraddpm``), each optionally suffixed by a step count (``ddim-10``);
``student`` with a ``checkpoint`` (a progressively distilled few-step student).
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

from policy_accel.model.config import DEFAULT_NOISE_SCHEDULER
from policy_accel.samplers.base import (
    Denoiser,
    SampleOutput,
    Sampler,
    SamplerAdapter,
    SamplerLike,
    SampleStats,
    as_sampler,
)
from policy_accel.samplers.picard import PICARD_DEFAULTS, PicardSampler
from policy_accel.samplers.sequential import SequentialSampler
from policy_accel.samplers.solvers import SOLVERS, StepSolver
from policy_accel.samplers.student import StudentSampler

ALIASES = {"picard": "paraddpm"}
PICARD_OPTIONS = (
    "window",
    "tolerance",
    "max_iterations",
    "auto_candidates",
    "deadline_s",
    "initial_guess",
    "iteration",
    "guess_checkpoint",
)
SAMPLER_KINDS = tuple(SOLVERS) + tuple(f"para{k}" for k in SOLVERS) + tuple(ALIASES) + ("student",)


def parse_sampler_spec(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """``"ddim-10"`` or ``{"name": "ddim", "num_steps": 10}`` -> option dict with ``name``."""
    if isinstance(spec, str):
        kind, _, steps = spec.strip().partition("-")
        options: dict[str, Any] = {"name": kind}
        if steps:
            if not steps.isdigit():
                raise ValueError(f"sampler '{spec}': step count '{steps}' is not an integer")
            options["num_steps"] = int(steps)
        return options
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "name" in options and isinstance(options["name"], str) and "-" in options["name"]:
            options = {**parse_sampler_spec(options["name"]), **{k: v for k, v in options.items() if k != "name"}}
        return options
    raise TypeError(f"sampler must be a name, a mapping or a Sampler, got {type(spec).__name__}")


def build_sampler(
    spec: str | Mapping[str, Any] | Sampler | SamplerLike,
    noise_scheduler: Mapping[str, Any] | None = None,
    default_guess_checkpoint: str | None = None,
    **overrides: Any,
) -> Sampler:
    """A sampler from a name (``"ddpm"``, ``"paraddim-16"``), a config mapping
    (``{"name": "paraddpm", "window": "auto", "tolerance": 0.1}``) or an existing sampler
    object. ``overrides`` are merged into the options.

    A :class:`Sampler` subclass instance is returned as is. A duck-typed object with only ``name`` and
    ``sample`` is still accepted, wrapped in a :class:`SamplerAdapter` that gives it the base class's
    defaults (no initial guess, nothing to move, compile or calibrate); subclass :class:`Sampler` to
    override them. Anything else is a ``TypeError``.

    ``default_guess_checkpoint``: the student a Picard sampler with ``initial_guess: student`` loads when its
    spec names no ``guess_checkpoint`` (the policy passes the shipped 1-step student of its own teacher)."""
    if not isinstance(spec, (str, Mapping)):
        sampler = as_sampler(spec)  # a TypeError for anything that is not a sampler
        if overrides:
            raise ValueError("options cannot be applied to an already built sampler object")
        return sampler
    options = {**parse_sampler_spec(spec), **overrides}
    kind = ALIASES.get(options.get("name"), options.get("name"))
    options.pop("name", None)
    label = options.pop("label", None)
    if kind == "student":
        if "checkpoint" not in options:
            raise ValueError("sampler 'student' needs a checkpoint (a distilled student .safetensors)")
        path = options.pop("checkpoint")
        unknown = sorted(set(options) - {"num_steps"})
        if unknown:
            raise ValueError(f"unknown options {unknown} for sampler 'student'; accepted: checkpoint, num_steps")
        return StudentSampler.from_file(path, num_steps=options.get("num_steps"), name=label)
    parallel = isinstance(kind, str) and kind.startswith("para") and kind[4:] in SOLVERS
    solver_kind = kind[4:] if parallel else kind
    if solver_kind not in SOLVERS:
        raise ValueError(f"unknown sampler '{kind}'; choose one of {list(SAMPLER_KINDS)}")
    picard_options = {k: options.pop(k) for k in PICARD_OPTIONS if k in options}
    if picard_options and not parallel:
        raise ValueError(f"options {sorted(picard_options)} only apply to Picard samplers (para*)")
    solver_cls = SOLVERS[solver_kind]
    accepted = set(inspect.signature(solver_cls.__init__).parameters) - {"self", "noise_scheduler"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"unknown options {unknown} for sampler '{kind}'; "
            f"accepted: {sorted(accepted | set(PICARD_OPTIONS if parallel else ()))}"
        )
    solver: StepSolver = solver_cls(dict(noise_scheduler or DEFAULT_NOISE_SCHEDULER), **options)
    if parallel:
        if "auto_candidates" in picard_options and picard_options["auto_candidates"] is not None:
            picard_options["auto_candidates"] = tuple(int(w) for w in picard_options["auto_candidates"])
        guess = picard_options.pop("guess_checkpoint", None)
        if picard_options.get("initial_guess") == "student":
            guess = guess or default_guess_checkpoint
            if guess is not None:
                picard_options["guess_sampler"] = StudentSampler.from_file(guess)
        elif guess is not None:
            raise ValueError("guess_checkpoint only applies with initial_guess: student")
        return PicardSampler(solver, name=label, **picard_options)
    return SequentialSampler(solver, name=label)


__all__ = [
    "PICARD_DEFAULTS",
    "Denoiser",
    "PicardSampler",
    "StudentSampler",
    "SampleOutput",
    "SampleStats",
    "Sampler",
    "SamplerAdapter",
    "SamplerLike",
    "SequentialSampler",
    "as_sampler",
    "build_sampler",
    "parse_sampler_spec",
    "SAMPLER_KINDS",
]
