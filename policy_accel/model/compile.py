"""Compiled denoisers: the same network, fewer framework overheads per call.

A Picard round or a sequential step is one call of a small network on a few rows, so on a CPU
much of its time is per-operator dispatch, and on a GPU it is kernel launches. Two backends:

* ``"freeze"``: TorchScript trace, freeze (weights folded as constants) and
  ``optimize_for_inference`` (fused conv/norm/activation kernels through oneDNN). Measured on
  the project's 2-core CPU it cuts a teacher call by about a quarter; the default on CPUs.
* ``"inductor"`` / ``"reduce-overhead"``: ``torch.compile``; ``reduce-overhead`` replays each
  window's rounds as CUDA graphs, the default on CUDA. On the CPU, inductor measured no faster
  than eager for this U-Net and costs ~50 s to compile.

``mode=True`` picks the default of the device. The compiled callable keeps the
``denoiser(x, t, cond)`` signature and gives the eager outputs within float tolerance (tested).
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any, Callable

import torch
from torch import nn

MODES = ("freeze", "inductor", "reduce-overhead")


def resolve_mode(mode: bool | str | None, device: torch.device) -> str | None:
    """``True`` -> the device's default backend; ``False``/``None`` -> eager; a name is checked."""
    if mode is None or mode is False:
        return None
    if mode is True:
        return "reduce-overhead" if device.type == "cuda" else "freeze"
    if isinstance(mode, str) and mode in MODES:
        return mode
    raise ValueError(f"compile must be true, false or one of {list(MODES)}, got {mode!r}")


class FrozenModule:
    """A TorchScript-frozen copy of ``module``, traced lazily on the first call's inputs (tensors, or a
    dict of tensors for an observation encoder).

    The trace generalises over the row count (Picard windows shrink at the end of a solve),
    which :func:`compile_module`'s check confirms on two batch sizes before use."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.frozen: Any = None

    def _build(self, *args: Any) -> None:
        # TorchScript is deprecated in favour of torch.compile, but on this CPU it is the backend that is
        # measurably faster (docs/benchmarks.md); its deprecation notices are not the user's to act on.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            args = tuple(_clone(a) for a in args)
            traced = torch.jit.trace(self.module.eval(), args, check_trace=False, strict=False)
            self.frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))

    def __call__(self, *args: Any) -> torch.Tensor:
        if self.frozen is None:
            self._build(*args)
        return self.frozen(*args)


def _clone(value: Any) -> Any:
    return {k: v.clone() for k, v in value.items()} if isinstance(value, dict) else value.clone()


def _one_more_row(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _one_more_row(v) for k, v in value.items()}
    return torch.cat([value, value[:1]])


def compile_module(
    module: nn.Module,
    mode: str,
    example: tuple[Any, ...],
    what: str = "denoiser",
    announce: bool = True,
    check_atol: float = 1e-4,
) -> Callable[..., torch.Tensor]:
    """Compile ``module`` with ``mode``; run it on ``example`` (and on one more row) so compilation happens
    now, announce how long it took, and check that it matches eager."""
    start = time.perf_counter()
    if mode == "freeze":
        compiled: Callable[..., torch.Tensor] = FrozenModule(module)
    else:
        compiled = torch.compile(module, mode=None if mode == "inductor" else mode, dynamic=True)
    more = tuple(_one_more_row(a) for a in example)
    with torch.inference_mode():
        for args in (example, more):
            got, want = compiled(*args), module(*args)
            if got.shape != want.shape or not torch.allclose(got, want, atol=check_atol, rtol=1e-4):
                raise RuntimeError(
                    f"compile mode {mode!r} changed the {what}'s output (max diff "
                    f"{float((got - want).abs().max()):.3g}); run with compile=false"
                )
    seconds = time.perf_counter() - start
    if announce:
        print(f"policy-accel: compiled the {what} ({mode}) in {seconds:.1f} s", file=sys.stderr, flush=True)
    return compiled


def compile_denoiser(
    module: nn.Module,
    mode: str,
    example: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    announce: bool = True,
    check_atol: float = 1e-4,
) -> Callable[..., torch.Tensor]:
    """:func:`compile_module` for a denoiser ``eps = module(x, t, cond)``."""
    return compile_module(module, mode, example, "denoiser", announce, check_atol)
