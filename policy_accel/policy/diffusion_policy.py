"""Diffusion Policy with a pluggable sampler: normalise, condition, sample, queue.

The policy owns the noise-prediction network, the normaliser and the training noise
schedule. How noise becomes an action chunk is the sampler's business
(:mod:`policy_accel.samplers`), so DDPM, DDIM, Picard or a distilled student are
swapped with :meth:`DiffusionPolicy.set_sampler` without touching anything else.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from policy_accel.data.normalizer import Normalizer
from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.policy.config import DiffusionPolicyConfig
from policy_accel.policy.warm_start import WarmStartState
from policy_accel.policy.warmup import (calibrate_with_cache, check_threads, needs_calibration, torch_threads,
                                       warmup_policy)
from policy_accel.samplers import Sampler, SampleStats, build_sampler
from policy_accel.samplers.sequential import draw_noise


class DiffusionPolicy(nn.Module):
    """Observation history -> action chunk, plus LeRobot-style ``select_action`` queueing."""

    def __init__(self, config: DiffusionPolicyConfig, normalizer: Normalizer | None = None,
                 sampler: str | Mapping[str, Any] | Sampler = "ddpm", warm_start: bool = False,
                 threads: int | None = None) -> None:
        super().__init__()
        self.config = config
        unet = config.unet
        self.model = ConditionalUnet1D(
            input_dim=config.action_dim, global_cond_dim=config.global_cond_dim,
            diffusion_step_embed_dim=unet.diffusion_step_embed_dim, down_dims=unet.down_dims,
            kernel_size=unet.kernel_size, n_groups=unet.n_groups, cond_predict_scale=unet.cond_predict_scale)
        self.normalizer = normalizer or Normalizer.empty_like({"obs": config.obs_dim, "action": config.action_dim})
        self.noise_scheduler = DDPMScheduler(**config.noise_scheduler)
        self.sampler: Sampler = build_sampler(sampler, config.noise_scheduler)
        self.generator = torch.Generator().manual_seed(0)
        self.last_stats: SampleStats | None = None
        self.warm_start = warm_start  # reuse the last chunk's noise and solution (see warm_start.py)
        self._warm: WarmStartState | None = None
        self.threads = check_threads(threads)  # torch intra-op threads while planning (None: torch's default)
        self._model_hash: str | None = None  # fingerprint of the network for the window calibration cache
        self._lock = threading.RLock()
        self._obs_queue: deque[torch.Tensor] = deque(maxlen=config.n_obs_steps)
        self._action_queue: deque[torch.Tensor] = deque()

    def __getstate__(self) -> dict[str, Any]:
        """Copies (EMA, pickling) get their own lock and empty queues."""
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_obs_queue"] = deque(maxlen=self.config.n_obs_steps)
        state["_action_queue"] = deque()
        state["_warm"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------- training
    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Epsilon-prediction MSE on a batch ``{"obs": (B, H, O), "action": (B, H, A)}``."""
        obs = self.normalizer.normalize("obs", batch["obs"])
        action = self.normalizer.normalize("action", batch["action"])
        cond = obs[:, : self.config.n_obs_steps].flatten(1)
        noise = torch.randn_like(action)
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (action.shape[0],),
                                  device=action.device)
        noisy = self.noise_scheduler.add_noise(action, noise, timesteps)
        return F.mse_loss(self.model(noisy, timesteps, cond), noise)

    # ------------------------------------------------------------ inference
    def set_sampler(self, sampler: str | Mapping[str, Any] | Sampler) -> None:
        built = build_sampler(sampler, self.config.noise_scheduler)
        self._check_sampler(built)
        with self._lock:
            self.sampler = built
            self._warm = None

    def _check_sampler(self, sampler: Sampler) -> None:
        """Samplers with their own network (distilled students) must share shapes and normaliser."""
        check = getattr(sampler, "check_compatible", None)
        if check is not None:
            cfg = self.config
            check(cfg.obs_dim, cfg.n_obs_steps, cfg.horizon, cfg.action_dim, self.normalizer)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser handed to samplers: eps for rows ``x`` at steps ``t`` given ``cond``."""
        return self.model(x, t, cond)

    def _check_obs(self, obs: torch.Tensor, expected: tuple[int, ...], what: str) -> None:
        if tuple(obs.shape[-len(expected):]) != expected or obs.ndim != len(expected) + 1:
            raise ValueError(f"{what} must have shape (batch, {', '.join(map(str, expected))}), "
                             f"got {tuple(obs.shape)}")
        if not torch.isfinite(obs).all():
            raise ValueError(f"{what} contains NaN or inf")

    @staticmethod
    def _as_tensor(obs: Any, what: str) -> torch.Tensor:
        array = obs if isinstance(obs, torch.Tensor) else np.asarray(obs)
        if isinstance(array, np.ndarray) and not np.issubdtype(array.dtype, np.number):
            raise TypeError(f"{what} must be numeric, got dtype {array.dtype}")
        if isinstance(array, torch.Tensor) and not (array.dtype.is_floating_point or array.dtype in
                                                     (torch.int32, torch.int64)):
            raise TypeError(f"{what} must be numeric, got dtype {array.dtype}")
        return torch.as_tensor(array, dtype=torch.float32)

    @torch.inference_mode()
    def predict_action_chunk(self, obs_history: Any, **sampler_kwargs: Any) -> torch.Tensor:
        """``obs_history`` (B, n_obs_steps, obs_dim) in env units -> (B, horizon, action_dim) in env units.

        ``sampler_kwargs`` go to the sampler (e.g. ``deadline_s`` for Picard samplers)."""
        cfg = self.config
        obs = self._as_tensor(obs_history, "obs_history")
        self._check_obs(obs, (cfg.n_obs_steps, cfg.obs_dim), "obs_history")
        shape = (obs.shape[0], cfg.horizon, cfg.action_dim)
        with self._lock, torch_threads(self.threads):
            cond = self.normalizer.normalize("obs", obs).flatten(1)
            if needs_calibration(self.sampler) and "window" not in sampler_kwargs:
                calibrate_with_cache(self, cond, shape)  # announced; policy.warmup() does it before the loop
            if self.warm_start and "noise" not in sampler_kwargs:
                sampler_kwargs.update(self._warm_start_inputs(shape))
            out = self.sampler.sample(self.denoise, cond, shape, generator=self.generator, **sampler_kwargs)
            if self.warm_start:
                self._warm = WarmStartState(sampler_kwargs["noise"], out.trajectory)
            self.last_stats = out.stats
            return self.normalizer.unnormalize("action", out.sample)

    def _warm_start_inputs(self, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        """Noise (and, for samplers that take one, an initial guess) shifted from the last chunk."""
        if self._warm is None or self._warm.noise.shape[1:] != shape:
            return {"noise": draw_noise(self.sampler.solver, shape, self.generator)}
        noise, guess = self._warm.next_inputs(self.config.n_action_steps, self.generator)
        inputs = {"noise": noise}
        if guess is not None and getattr(self.sampler, "accepts_initial_guess", False):
            inputs["init_trajectory"] = guess
        return inputs

    def neutral_cond(self, batch_size: int = 1) -> torch.Tensor:
        """Conditioning of a mid-range observation (normalised zeros): what warm-up and calibration plan for."""
        return torch.zeros((batch_size, self.config.global_cond_dim))

    def warmup(self, batch_size: int = 1, use_cache: bool = True, verbose: bool = True) -> dict[str, Any]:
        """Do the slow first-call work before a control loop's first tick and say how long it took.

        Resolves ``window="auto"`` (from the per-machine cache, else measured and cached) and plans
        one chunk so kernels are warm. ``batch_size`` is the number of observations per call (envs).
        Uses its own RNG: the policy's generator and torch's global RNG are untouched."""
        with self._lock, torch_threads(self.threads):
            return warmup_policy(self, batch_size=batch_size, use_cache=use_cache, verbose=verbose)

    def reset(self, seed: int | None = None) -> None:
        """Forget the observation and action queues (call at every episode start)."""
        with self._lock:
            self._obs_queue.clear()
            self._action_queue.clear()
            self._warm = None
            if seed is not None:
                self.generator.manual_seed(seed)

    @torch.inference_mode()
    def select_action(self, obs: Any) -> np.ndarray:
        """One env step: ``obs`` (obs_dim,) or (B, obs_dim) -> action (action_dim,) or (B, action_dim).

        Plans a chunk only when the queue of executed actions runs dry: actions
        ``n_obs_steps - 1 ... n_obs_steps - 2 + n_action_steps`` of the chunk, aligned so the
        first executed action follows the newest observation (Diffusion Policy's convention).
        """
        cfg = self.config
        # A copy: robot loops often reuse one buffer per tick, and a queued view would be overwritten.
        tensor = self._as_tensor(obs, "obs").clone()
        single = tensor.ndim == 1
        batch = tensor[None] if single else tensor
        self._check_obs(batch, (cfg.obs_dim,), "obs")
        with self._lock:
            if self._obs_queue and self._obs_queue[-1].shape != batch.shape:
                raise ValueError(f"obs batch changed from {tuple(self._obs_queue[-1].shape)} to "
                                 f"{tuple(batch.shape)} without reset()")
            if not self._obs_queue:  # first step: pad history by repeating the first observation
                self._obs_queue.extend([batch] * cfg.n_obs_steps)
            else:
                self._obs_queue.append(batch)
            if not self._action_queue:
                chunk = self.predict_action_chunk(torch.stack(list(self._obs_queue), dim=1))
                start = cfg.n_obs_steps - 1
                self._action_queue.extend(chunk[:, start: start + cfg.n_action_steps].unbind(1))
            action = self._action_queue.popleft().numpy()
        return action[0] if single else action
