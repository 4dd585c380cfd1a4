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

import policy_accel.formats  # noqa: F401  (registers the formats' encoders, e.g. LeRobot's, before a config names one)
from policy_accel.data.normalizer import Normalizer
from policy_accel.model.builders import build_network, build_obs_encoder
from policy_accel.model.config import DiffusionPolicyConfig
from policy_accel.policy.calibration_cache import model_fingerprint as weights_fingerprint
from policy_accel.policy.chunking import PlanningCancelled
from policy_accel.policy.obs_validation import checked_history, checked_step
from policy_accel.policy.warm_start import WarmStartState
from policy_accel.policy.warmup import calibrate_with_cache, check_threads, torch_threads, warmup_policy
from policy_accel.samplers import Sampler, SamplerLike, SampleStats, as_sampler, build_sampler
from policy_accel.samplers.solvers import ddpm_scheduler_config


class DiffusionPolicy(nn.Module):
    """Observation history -> action chunk, plus LeRobot-style ``select_action`` queueing."""

    def __init__(
        self,
        config: DiffusionPolicyConfig,
        normalizer: Normalizer | None = None,
        sampler: str | Mapping[str, Any] | Sampler | SamplerLike = "ddpm",
        warm_start: bool = False,
        threads: int | None = None,
        model: nn.Module | None = None,
        obs_encoder: nn.Module | None = None,
    ) -> None:
        """``model`` / ``obs_encoder`` default to what ``config`` names (:mod:`policy_accel.model.builders`);
        pass modules to plug in others (they must follow the protocols documented there)."""
        super().__init__()
        self.config = config
        self.model = model if model is not None else build_network(config)
        self.obs_encoder = obs_encoder if obs_encoder is not None else build_obs_encoder(config)
        if normalizer is None:
            normalizer = (
                Normalizer.empty_from_spec(config.normalizer)
                if config.normalizer is not None
                else Normalizer.empty_like({"obs": config.obs_dim, "action": config.action_dim})
            )
        self.normalizer = normalizer
        self.noise_scheduler = DDPMScheduler(**ddpm_scheduler_config(config.noise_scheduler))
        self._sampler: Sampler = build_sampler(sampler, config.noise_scheduler)
        self.generator = torch.Generator().manual_seed(0)
        self.last_stats: SampleStats | None = None
        self.warm_start = warm_start  # reuse the last chunk's noise and solution (see warm_start.py)
        self._warm: WarmStartState | None = None
        self.compile_mode: str | None = None  # the denoiser's compile backend (see compile())
        self.threads = check_threads(threads)  # torch intra-op threads while planning (None: torch's default)
        self._model_fingerprint: str | None = None  # see model_fingerprint
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
        state.pop("_compiled_cache", None)  # compiled code is tied to the original's weights: copies run eager
        state.pop("_compiled_denoiser", None)
        state.pop("_compiled_encoder", None)
        state.pop("_cancel_event", None)
        state["compile_mode"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "sampler" in state:  # pickled before the sampler became a property
            state["_sampler"] = as_sampler(state.pop("sampler"))
        state.setdefault("_model_fingerprint", state.pop("_model_hash", None))
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def model_fingerprint(self) -> str:
        """SHA-256 prefix of the network's weights, computed once on first use: the window calibration
        cache keys on it, so another model never reuses a window. Load the final weights before asking."""
        if self._model_fingerprint is None:
            self._model_fingerprint = weights_fingerprint(self.model)
        return self._model_fingerprint

    # ------------------------------------------------------------- training
    def compute_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Epsilon-prediction MSE on a batch ``{"obs": (B, H, O), "action": (B, H, A)}``."""
        action = self.normalizer.normalize("action", batch["action"])
        cond = self._encode(self._first_frames(batch["obs"]))
        noise = torch.randn_like(action)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (action.shape[0],), device=action.device
        )
        noisy = self.noise_scheduler.add_noise(action, noise, timesteps)
        return F.mse_loss(self.model(noisy, timesteps, cond), noise)

    # ------------------------------------------------------------ inference
    @property
    def sampler(self) -> Sampler:
        """The sampler that plans chunks (set it with :meth:`set_sampler`, which checks and prepares it)."""
        return self._sampler

    @sampler.setter
    def sampler(self, sampler: Sampler | SamplerLike) -> None:
        """Plain assignment swaps the sampler unchecked (a duck-typed one is wrapped, see ``as_sampler``)."""
        with self._lock:
            self._sampler = as_sampler(sampler)
            self._warm = None

    def set_sampler(self, sampler: str | Mapping[str, Any] | Sampler | SamplerLike) -> None:
        """Swap the sampler (a name, a config mapping or a sampler object, see ``build_sampler``): checked
        against this policy, moved to its device and compiled with its compile mode."""
        guess = self.__dict__.get("default_guess_checkpoint")  # initial_guess=student: the shipped student
        built = build_sampler(sampler, self.config.noise_scheduler, default_guess_checkpoint=guess)
        cfg = self.config  # samplers with their own network (students) must share shapes and normaliser
        built.check_compatible(cfg.obs_dim, cfg.n_obs_steps, cfg.horizon, cfg.action_dim, self.normalizer)
        built.to(self.device)  # a student: its network joins the policy's device (and compile mode)
        if self.compile_mode is not None:
            built.compile(self.compile_mode)
        with self._lock:
            self._sampler = built
            self._warm = None

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The denoiser handed to samplers: eps for rows ``x`` at steps ``t`` given ``cond``
        (the compiled network when :meth:`compile` was called). A set ``_cancel_event`` (a closing
        :class:`~policy_accel.policy.realtime.RealTimePolicy`) stops a solve at its next network call."""
        cancel = self.__dict__.get("_cancel_event")
        if cancel is not None and cancel.is_set():
            raise PlanningCancelled("planning cancelled")
        compiled = self.__dict__.get("_compiled_denoiser")
        return compiled(x, t, cond) if compiled is not None else self.model(x, t, cond)

    def _example_frames(self) -> dict[str, torch.Tensor]:
        """Normalised frames of ``n_obs_steps`` mid-range observations, as the encoder sees them (compiling)."""
        shapes = self.config.obs_shapes or {}
        return {
            k: torch.full(
                (self.config.n_obs_steps, *(int(d) for d in v["shape"])),
                0.5 if v["type"] == "rgb" else 0.0,
                device=self.device,
            )
            for k, v in shapes.items()
        }

    @property
    def device(self) -> torch.device:
        """Where the network lives (move the policy with ``.to(device)``; observations follow it)."""
        return next(self.model.parameters()).device

    def compile(self, mode: bool | str = True, batch_size: int = 1) -> DiffusionPolicy:  # type: ignore[override]
        """Compile the denoiser (``mode``: True = the device's best backend, ``"freeze"``, ``"inductor"``,
        ``"reduce-overhead"``; False = eager again). Compiles now, announces its time, checks it against
        eager, and caches per mode, so switching back and forth (benchmarks) compiles once. Call it once the
        weights are final: the ``freeze`` backend folds them in as constants."""
        from policy_accel.model.compile import compile_denoiser, compile_module, resolve_mode

        resolved = resolve_mode(mode, self.device)
        cache = self.__dict__.setdefault("_compiled_cache", {})
        if resolved is not None and resolved not in cache:
            rows = max(8, batch_size)
            example = (
                torch.zeros((rows, self.config.horizon, self.config.action_dim), device=self.device),
                torch.full((rows,), 1, dtype=torch.long, device=self.device),
                self.neutral_cond(rows),
            )
            cache[resolved] = compile_denoiser(self.model.eval(), resolved, example)
            if self.obs_encoder is not None:  # runs once per chunk, but on images it is most of a small chunk
                cache[("encoder", resolved)] = compile_module(
                    self.obs_encoder.eval(), resolved, (self._example_frames(),), what="observation encoder"
                )
        self.__dict__["_compiled_denoiser"] = cache.get(resolved) if resolved is not None else None
        self.__dict__["_compiled_encoder"] = cache.get(("encoder", resolved)) if resolved is not None else None
        self.compile_mode = resolved
        self.sampler.to(self.device).compile(resolved)  # a distilled student runs its own network
        return self

    # ------------------------------------------------------- observations
    def _first_frames(self, obs: Any) -> Any:
        n = self.config.n_obs_steps
        return {k: v[:, :n] for k, v in obs.items()} if isinstance(obs, Mapping) else obs[:, :n]

    def _encode(self, obs: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Checked history ``(B, n_obs_steps, ...)`` in env units -> conditioning ``(B, n_obs_steps * obs_dim)``."""
        device = self.device  # observations arrive from anywhere (numpy, another device): move them once
        obs = (
            {k: v.to(device, non_blocking=True) for k, v in obs.items()}
            if isinstance(obs, Mapping)
            else obs.to(device, non_blocking=True)
        )
        if not isinstance(obs, Mapping):
            return self.normalizer.normalize("obs", obs).flatten(1)
        fields = self.normalizer.fields
        batch = next(iter(obs.values())).shape[0]
        # keys without a normaliser field are fed as they are; frames of all chunks in one encoder batch
        frames = {k: (self.normalizer.normalize(k, v) if k in fields else v).flatten(0, 1) for k, v in obs.items()}
        if self.obs_encoder is not None:
            encoder = self.__dict__.get("_compiled_encoder") or self.obs_encoder
            features = encoder(frames)
        else:
            features = torch.cat([frames[k].flatten(1) for k in self.config.obs_shapes or frames], dim=-1)
        return features.reshape(batch, -1)

    def encode_obs(self, obs_history: Any) -> torch.Tensor:
        """Observation history in env units -> the samplers' 2-D conditioning ``(B, n_obs_steps * obs_dim)``.

        Runs the observation encoder once per chunk; every network call of the sampler (Picard windows
        included) reuses this tensor."""
        return self._encode(checked_history(self.config, obs_history))

    @torch.inference_mode()
    def predict_action_chunk(self, obs_history: Any, **sampler_kwargs: Any) -> torch.Tensor:
        """``obs_history`` (B, n_obs_steps, obs_dim) in env units -> (B, horizon, action_dim) in env units.

        Dict policies take ``{key: (B, n_obs_steps, *shape)}`` (keys and shapes: ``config.obs_shapes``).
        ``sampler_kwargs`` go to the sampler (e.g. ``deadline_s`` for Picard samplers)."""
        cfg = self.config
        obs = checked_history(self.config, obs_history)
        batch = next(iter(obs.values())).shape[0] if isinstance(obs, dict) else obs.shape[0]
        shape = (batch, cfg.horizon, cfg.action_dim)
        with self._lock, torch_threads(self.threads):
            cond = self._encode(obs)  # once per chunk: samplers reuse it for every network call
            if self.warm_start and self._warm is not None and self._warm.noise.device != cond.device:
                self._warm = None  # the policy moved to another device
            if self.sampler.needs_calibration and "window" not in sampler_kwargs:
                calibrate_with_cache(self, cond, shape)  # announced; policy.warmup() does it before the loop
            if self.warm_start and "noise" not in sampler_kwargs:
                sampler_kwargs.update(self._warm_start_inputs(shape))
            self.sampler.to(cond.device)  # a student's own network follows the policy's device
            out = self.sampler.sample(self.denoise, cond, shape, generator=self.generator, **sampler_kwargs)
            if self.warm_start:
                self._warm = WarmStartState(sampler_kwargs["noise"], out.trajectory)
            self.last_stats = out.stats
            return self.normalizer.unnormalize("action", out.sample)

    def _warm_start_inputs(self, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        """Noise (and, for samplers that take one, an initial guess) shifted from the last chunk."""
        if self._warm is None or self._warm.noise.shape[1:] != shape:
            return {"noise": self.sampler.initial_noise(shape, self.generator, device=self.device)}
        noise, guess = self._warm.next_inputs(self.config.n_action_steps, self.generator)
        inputs = {"noise": noise}
        if guess is not None and self.sampler.accepts_initial_guess:
            inputs["init_trajectory"] = guess
        return inputs

    def neutral_cond(self, batch_size: int = 1) -> torch.Tensor:
        """Conditioning of a mid-range observation (normalised zeros): what warm-up and calibration plan for."""
        return torch.zeros((batch_size, self.config.global_cond_dim), device=self.device)

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

    @staticmethod
    def _obs_signature(obs: Any) -> Any:
        return {k: tuple(v.shape) for k, v in obs.items()} if isinstance(obs, dict) else tuple(obs.shape)

    @torch.inference_mode()
    def select_action(self, obs: Any, as_tensor: bool = False) -> np.ndarray | torch.Tensor:
        """One env step: ``obs`` (obs_dim,) or (B, obs_dim) -> action (action_dim,) or (B, action_dim).

        Dict policies take ``{key: (*shape)}`` or ``{key: (B, *shape)}`` per step (``config.obs_shapes``).
        Plans a chunk only when the queue of executed actions runs dry: actions
        ``first_action ... first_action + n_action_steps - 1`` of the chunk (``n_obs_steps - 1`` unless
        the config says otherwise), aligned so the first executed action follows the newest observation
        (Diffusion Policy's convention). Actions are numpy in env units; ``as_tensor=True`` gives a CPU
        torch tensor instead.
        """
        cfg = self.config
        batch, single = checked_step(cfg, obs)  # a copy: loops often reuse one buffer per tick
        signature = self._obs_signature(batch)
        with self._lock:
            if self._obs_queue and self._obs_signature(self._obs_queue[-1]) != signature:
                raise ValueError(
                    f"obs batch changed from {self._obs_signature(self._obs_queue[-1])} to {signature} without reset()"
                )
            if not self._obs_queue:  # first step: pad history by repeating the first observation
                self._obs_queue.extend([batch] * cfg.n_obs_steps)
            else:
                self._obs_queue.append(batch)
            if not self._action_queue:
                queued = list(self._obs_queue)
                history = (
                    {k: torch.stack([q[k] for q in queued], dim=1) for k in batch}
                    if isinstance(batch, dict)
                    else torch.stack(queued, dim=1)
                )
                chunk = self.predict_action_chunk(history)
                start = cfg.first_action
                self._action_queue.extend(chunk[:, start : start + cfg.n_action_steps].cpu().unbind(1))
            queued = self._action_queue.popleft()  # on the CPU: one device-to-host copy per chunk
        action = queued.clone() if as_tensor else queued.numpy()
        return action[0] if single else action
