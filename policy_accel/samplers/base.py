"""The one base class every way of turning noise into an action chunk subclasses.

A sampler gets a *denoiser* (the policy's noise-prediction network with the
observation conditioning bound), the chunk shape and a torch generator, and
returns the chunk in normalised action units with statistics. Samplers know
nothing about observations, normalisation or queues; the policy knows nothing
about solver steps. That split is what lets DDPM, DDIM, DPM-Solver, Picard and a
distilled student be swapped by name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from policy_accel.data.normalizer import Normalizer


@runtime_checkable
class Denoiser(Protocol):
    """``eps = denoiser(x, t, cond)``: x (N, T, D), t (N,) long, cond (N, C) -> (N, T, D).

    N may be larger than the observation batch: Picard samplers stack many timesteps
    of the same observation into one call, repeating ``cond`` to match.
    """

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SampleStats:
    """What a sampler spent. ``rounds`` are sequential network calls (latency on a wide
    accelerator); ``nfe`` counts network evaluations per observation (compute)."""

    nfe: int
    rounds: int
    final_error: float = 0.0
    converged: bool = True
    hit_deadline: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SampleOutput:
    sample: torch.Tensor  # (B, T, D), normalised action units
    stats: SampleStats
    trajectory: torch.Tensor | None = None  # (steps + 1, B, T, D) when the sampler keeps it (Picard)


def standard_normal(
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Standard normal draws of ``shape`` from ``generator``'s own device, then moved to ``device``.

    Drawing on the generator's device means a seeded CPU generator gives the same numbers whatever
    device samples (the policy's generator is on the CPU)."""
    source = generator.device if generator is not None else torch.device(device)
    noise = torch.randn(shape, generator=generator, dtype=dtype, device=source)
    return noise.to(device)  # a CPU generator on an accelerator: the same draws on every device


class Sampler(ABC):
    """Noise -> action chunk: everything the policy, warm-up, the rollout harness and the bench use.

    Subclasses implement :meth:`sample`; every other member has a default that suits a sampler
    without a network of its own, a solver or a calibration, so a custom sampler works wherever a
    shipped one does (``set_sampler``, warm start, ``warmup()``, ``compile``, ``.to(device)``).
    Samplers are cheap, stateless between calls (apart from a calibration), and take their schedule
    from the policy's training noise scheduler config.

    The policy calls ``sample(denoiser, cond, shape, generator=..., **kwargs)`` where ``kwargs`` may hold

    * ``noise``: the sampler's randomness, a tensor shaped like :meth:`initial_noise`'s (warm start
      passes the last chunk's noise, shifted); a sampler should use it instead of drawing its own;
    * ``init_trajectory``: an initial guess of the trajectory, only when :attr:`accepts_initial_guess`;
    * ``constraint``: an :class:`~policy_accel.samplers.inpainting.InpaintConstraint` (a committed prefix to hold
      and an overlap to guide), only when :attr:`supports_inpainting`;
    * ``window`` (calibration), ``deadline_s`` and whatever the caller of ``predict_action_chunk`` adds.
    """

    name: str
    accepts_initial_guess: bool = False  # sample() takes init_trajectory (Picard: a warm start's guess)
    supports_inpainting: bool = False  # sample() takes constraint= (real-time chunking's held prefix, inpainting.py)
    calibration: dict[str, Any] | None = None  # what calibrate() chose (with "window"), once resolved

    @abstractmethod
    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> SampleOutput:
        """The chunk ``shape`` (B, horizon, action_dim) in normalised action units for conditioning ``cond``."""

    def initial_noise(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """All the randomness of one chunk, drawn up front: ``(rows, *shape)``, row 0 the initial x_T.

        Warm start draws it for the first chunk and shifts it along the horizon afterwards, then hands
        it to :meth:`sample` as ``noise``. Default: one row of standard normal noise (a sampler that
        adds no noise after x_T); solvers that add noise each step draw ``steps + 1`` rows."""
        return standard_normal((1, *shape), generator, dtype, device)

    def to(self, device: torch.device | str) -> Sampler:
        """Move what the sampler owns (a student's network) to ``device``; the policy calls it to keep the
        sampler beside the denoiser. Default: nothing to move."""
        return self

    def compile(self, mode: str | None) -> Sampler:
        """Compile the sampler's own network with a :func:`policy_accel.model.compile.compile_denoiser`
        mode (``None``: eager); the policy calls it when it compiles its denoiser. Default: no network."""
        return self

    def check_compatible(  # noqa: B027  (deliberately empty: the default accepts every policy)
        self, obs_dim: int, n_obs_steps: int, horizon: int, action_dim: int, normalizer: Normalizer
    ) -> None:
        """Raise ``ValueError`` unless the sampler fits a policy of these shapes and normaliser (a student
        distilled from another teacher does not). Default: every policy fits."""

    @property
    def needs_calibration(self) -> bool:
        """Whether :meth:`calibrate` must run before the next :meth:`sample` (Picard, ``window="auto"``,
        not yet resolved). The policy does it then (cached per machine), or ``policy.warmup()`` before."""
        return False

    def calibration_settings(self) -> dict[str, Any]:
        """The sampler settings a calibration depends on (part of the calibration cache key)."""
        return {"name": self.name}

    def calibrate(self, denoiser: Denoiser, cond: torch.Tensor, shape: tuple[int, int, int]) -> dict[str, Any]:
        """Measure on this machine and store the result in :attr:`calibration` (a dict with an int
        ``"window"``, which the calibration cache stores). Only called when :attr:`needs_calibration`."""
        raise NotImplementedError(f"sampler {self.name} has nothing to calibrate")


@runtime_checkable
class SamplerLike(Protocol):
    """What a duck-typed sampler must have for :func:`as_sampler` to wrap it."""

    name: str

    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> SampleOutput: ...


class SamplerAdapter(Sampler):
    """A duck-typed object with ``name`` and ``sample`` as a :class:`Sampler` with every default.

    Only ``name`` and ``sample`` are taken from the wrapped object; its own ``to``, ``compile``,
    ``accepts_initial_guess``... are not consulted (subclass :class:`Sampler` to provide them)."""

    def __init__(self, wrapped: SamplerLike) -> None:
        self.wrapped = wrapped

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.wrapped.name

    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> SampleOutput:
        return self.wrapped.sample(denoiser, cond, shape, generator=generator, **kwargs)

    def __repr__(self) -> str:
        return f"SamplerAdapter({self.wrapped!r})"


def as_sampler(sampler: Sampler | SamplerLike) -> Sampler:
    """``sampler`` itself when it subclasses :class:`Sampler`; a duck-typed object with ``name`` and
    ``sample`` wrapped in a :class:`SamplerAdapter` (kept working for samplers written before the base
    class); anything else is a ``TypeError``."""
    if isinstance(sampler, Sampler):
        return sampler
    if isinstance(sampler, SamplerLike):
        return SamplerAdapter(sampler)
    raise TypeError(f"sampler must be a name, a mapping or a Sampler, got {type(sampler).__name__}")


class NonFiniteSampleError(FloatingPointError):
    """The network produced NaN/inf: the chunk is unusable and must not be executed.

    Usually an observation far outside the training range (normalised values of 1e20
    overflow the network's float32 activations)."""


def check_finite_sample(sample: torch.Tensor, sampler_name: str) -> None:
    """Raise :class:`NonFiniteSampleError` unless every value of ``sample`` is finite (one sync)."""
    if not bool(torch.isfinite(sample).all()):
        raise NonFiniteSampleError(
            f"sampler {sampler_name}: the denoised action chunk contains NaN/inf (the network output is not "
            "finite; is the observation far outside the range the policy was trained on?)"
        )


def check_cond(cond: torch.Tensor, shape: tuple[int, int, int]) -> None:
    """Reject conditioning that does not match the requested batch, or is not finite."""
    if len(shape) != 3:
        raise ValueError(f"chunk shape must be (batch, horizon, action_dim), got {tuple(shape)}")
    if cond.ndim != 2 or cond.shape[0] != shape[0]:
        raise ValueError(f"cond must be (batch={shape[0]}, C), got {tuple(cond.shape)}")
    if not torch.isfinite(cond).all():
        raise ValueError("conditioning contains NaN or inf")
    if not bool((cond.abs() < 1e15).all()):  # finite but overflows the network's float32 activations
        raise ValueError(
            f"conditioning is out of range (max |value| {float(cond.abs().max()):.3g} after "
            "normalisation): the observation is far outside what the policy was trained on"
        )
