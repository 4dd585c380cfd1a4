"""The distilled few-step student as a sampler: its own v-prediction network, DDIM on its grid.

A student file holds the student U-Net (``model.*``), the teacher's normaliser
(``normalizer.*``, checked against the policy's when attached) and, in its metadata,
the policy config and the student's timestep grid. The sampler ignores the teacher
denoiser it is handed and runs its own network, so ``sampler=student`` drops into the
policy, the rollout harness and the benchmark like any other sampler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from policy_accel.data.normalizer import Normalizer
from policy_accel.model.checkpoint_io import CheckpointError, load_state_checked, read_checkpoint, write_checkpoint
from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.samplers.base import Denoiser, SampleOutput, Sampler
from policy_accel.samplers.sequential import SequentialSampler
from policy_accel.samplers.solvers import VPredictionDDIMSolver

STUDENT_FORMAT = "policy_accel.student/1"


def unet_from_policy_config(policy_config: Mapping[str, Any]) -> ConditionalUnet1D:
    """The U-Net a (teacher or student) policy config describes."""
    unet = dict(policy_config["unet"])
    return ConditionalUnet1D(
        input_dim=int(policy_config["action_dim"]),
        global_cond_dim=int(policy_config["obs_dim"]) * int(policy_config["n_obs_steps"]),
        diffusion_step_embed_dim=int(unet["diffusion_step_embed_dim"]),
        down_dims=tuple(unet["down_dims"]),
        kernel_size=int(unet["kernel_size"]),
        n_groups=int(unet["n_groups"]),
        cond_predict_scale=bool(unet["cond_predict_scale"]),
    )


class _StudentModule(nn.Module):
    """Container whose state_dict keys match a policy's (``model.*``, ``normalizer.*``)."""

    def __init__(self, model: ConditionalUnet1D, normalizer: Normalizer) -> None:
        super().__init__()
        self.model, self.normalizer = model, normalizer


def save_student(
    model: ConditionalUnet1D,
    normalizer: Normalizer,
    policy_config: Mapping[str, Any],
    grid: torch.Tensor | list[int],
    path: str | Path,
    recipe: Mapping[str, Any] | None = None,
) -> Path:
    grid_list = [int(t) for t in torch.as_tensor(grid).tolist()]
    config = {
        "policy": dict(policy_config),
        "student": {"num_steps": len(grid_list) - 1, "grid": grid_list, "parameterization": "v"},
    }
    return write_checkpoint(
        _StudentModule(model, normalizer).state_dict(),
        path,
        STUDENT_FORMAT,
        config,
        extra=dict(recipe) if recipe else None,
    )


class StudentSampler(Sampler):
    """``num_steps`` DDIM steps of a distilled v-prediction student."""

    supports_inpainting = True  # through its sequential solve

    def __init__(
        self,
        network: ConditionalUnet1D,
        normalizer: Normalizer,
        policy_config: Mapping[str, Any],
        grid: torch.Tensor | list[int],
        name: str | None = None,
        source: str | None = None,
    ) -> None:
        self.network = network.eval()
        self.normalizer = normalizer
        self.policy_config = dict(policy_config)
        self.solver = VPredictionDDIMSolver(self.policy_config["noise_scheduler"], grid)
        self.num_steps = self.solver.num_steps
        self.name = name or f"student-{self.num_steps}"
        self.source = source
        self._sequential = SequentialSampler(self.solver, name=self.name)

    @classmethod
    def from_file(cls, path: str | Path, num_steps: int | None = None, name: str | None = None) -> StudentSampler:
        tensors, config, _ = read_checkpoint(path, STUDENT_FORMAT)
        try:
            policy_config, student = config["policy"], config["student"]
            network = unet_from_policy_config(policy_config)
            spec = policy_config.get("normalizer")  # imported teachers: their own layout (e.g. scale/offset)
            normalizer = (
                Normalizer.empty_from_spec(spec)
                if spec is not None
                else Normalizer.empty_like(
                    {"obs": int(policy_config["obs_dim"]), "action": int(policy_config["action_dim"])}
                )
            )
            grid = student["grid"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"'{path}' has an invalid student config: {exc}") from exc
        load_state_checked(_StudentModule(network, normalizer), tensors, f"student checkpoint '{path}'")
        if num_steps is not None and num_steps != len(grid) - 1:
            raise ValueError(f"'{path}' is a {len(grid) - 1}-step student, not {num_steps}-step")
        return cls(network, normalizer, policy_config, grid, name=name, source=str(path))

    def initial_noise(
        self,
        shape: tuple[int, int, int],
        generator: torch.Generator | None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """x_T and every step's noise on the student's grid, ``(num_steps + 1, *shape)``."""
        return self._sequential.initial_noise(shape, generator, device, dtype)

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        compiled = self.__dict__.get("_compiled")
        return compiled(x, t, cond) if compiled is not None else self.network(x, t, cond)

    def to(self, device: torch.device | str) -> StudentSampler:
        """Move the student's network to ``device`` (the policy does this to follow its own device)."""
        device = torch.device(device)
        if next(self.network.parameters()).device != device:
            self.network.to(device)
            self.__dict__.pop("_compiled", None)
            self.__dict__.pop("_compiled_cache", None)
        return self

    def compile(self, mode: str | None, rows: int = 8) -> StudentSampler:
        """Compile the student's network (a mode of :func:`policy_accel.model.compile.compile_denoiser`,
        None: eager)."""
        from policy_accel.model.compile import compile_denoiser

        cache = self.__dict__.setdefault("_compiled_cache", {})
        if mode is None or mode in cache:  # eager, or compiled with this backend before: switch, don't recompile
            self._compiled = cache.get(mode)
            return self
        device = next(self.network.parameters()).device
        cfg = self.policy_config
        cond_dim = int(cfg["obs_dim"]) * int(cfg["n_obs_steps"])
        example = (
            torch.zeros((rows, int(cfg["horizon"]), int(cfg["action_dim"])), device=device),
            torch.full((rows,), 1, dtype=torch.long, device=device),
            torch.zeros((rows, cond_dim), device=device),
        )
        self._compiled = cache[mode] = compile_denoiser(self.network, mode, example)
        return self

    def check_compatible(
        self, obs_dim: int, n_obs_steps: int, horizon: int, action_dim: int, normalizer: Normalizer
    ) -> None:
        """Refuse to run under a policy whose shapes or normalisation differ from the student's."""
        mine = self.policy_config
        ours = {"obs_dim": obs_dim, "n_obs_steps": n_obs_steps, "horizon": horizon, "action_dim": action_dim}
        wrong = {k: (mine[k], v) for k, v in ours.items() if int(mine[k]) != int(v)}
        if wrong:
            raise ValueError(
                f"student {self.source or self.name} does not fit this policy: "
                + ", ".join(f"{k} student {a} vs policy {b}" for k, (a, b) in wrong.items())
            )
        theirs, own = normalizer.state_dict(), self.normalizer.state_dict()
        if set(theirs) != set(own) or any(not torch.allclose(theirs[k], own[k]) for k in own):
            raise ValueError(
                f"student {self.source or self.name} was distilled with other normaliser stats than this policy's"
            )

    @torch.inference_mode()
    def sample(
        self,
        denoiser: Denoiser,
        cond: torch.Tensor,
        shape: tuple[int, int, int],
        generator: torch.Generator | None = None,
        **kwargs: Any,
    ) -> SampleOutput:
        """``denoiser`` (the teacher's) is deliberately unused: the student runs its own network."""
        return self._sequential.sample(self._denoise, cond, shape, generator=generator, **kwargs)
