"""Train a Diffusion Policy teacher on PushT demonstrations, resumably, on the CPU.

Diffusion Policy's recipe (AdamW, cosine schedule with warm-up, EMA weights) with
sizes from the hydra config. Everything needed to continue lives in
``<run_dir>/last.pt`` (weights, EMA, optimiser, scheduler, RNG, step), written
atomically every ``ckpt_every`` steps; the EMA policy is exported alongside as a
shippable ``.safetensors``. ``<run_dir>/log.jsonl`` gets one JSON line per log event.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from diffusers.optimization import get_cosine_schedule_with_warmup
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from policy_accel.data.batches import ResumableBatchSampler
from policy_accel.data.datasets import WindowDataset
from policy_accel.device import resolve_device
from policy_accel.eval.families import family_for
from policy_accel.model.config import DiffusionPolicyConfig, UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import save_policy
from policy_accel.train.ema import make_ema


def build_dataset(cfg: DictConfig) -> WindowDataset:
    """The env family's demonstration windows (Meta-World: the record-demos zarr, the env's tasks)."""
    d, p = cfg.dataset, cfg.policy
    family = family_for(cfg.env)
    return family.dataset(
        d.zarr_path,
        obs_type=cfg.env.obs_type,
        horizon=p.horizon,
        n_obs_steps=p.n_obs_steps,
        n_action_steps=p.n_action_steps,
        tasks=family.tasks(cfg.env),
        val_ratio=d.val_ratio,
        seed=d.seed,
        max_train_episodes=d.max_train_episodes,
    )


def build_policy(cfg: DictConfig, dataset: WindowDataset) -> DiffusionPolicy:
    p = cfg.policy
    config = DiffusionPolicyConfig(
        obs_type=cfg.env.obs_type,
        obs_dim=dataset.obs_dim,
        action_dim=dataset.action_dim,
        horizon=p.horizon,
        n_obs_steps=p.n_obs_steps,
        n_action_steps=p.n_action_steps,
        unet=UnetConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True)),
        noise_scheduler=dict(OmegaConf.to_container(p.noise_scheduler, resolve=True)),
    )
    return DiffusionPolicy(config, dataset.fit_normalizer())


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


@torch.no_grad()
def validation_loss(policy: torch.nn.Module, dataset: WindowDataset, batch_size: int, seed: int = 0) -> float:
    """Mean denoising loss on held-out episodes with fixed noise (comparable across steps)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    device = policy.device
    losses = [
        float(policy.compute_loss(to_device(batch, device))) for batch in DataLoader(dataset, batch_size=batch_size)
    ]
    torch.random.set_rng_state(state)
    return sum(losses) / max(len(losses), 1)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """A data-loader batch (nested dicts of tensors) on the training device."""
    return {
        k: to_device(v, device) if isinstance(v, dict) else v.to(device, non_blocking=True) for k, v in batch.items()
    }


def train(cfg: DictConfig) -> Path:
    """Run (or resume) training as configured; returns the exported EMA checkpoint path."""
    t = cfg.train
    torch.set_num_threads(int(cfg.threads))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    torch.manual_seed(int(cfg.seed))

    dataset = build_dataset(cfg)
    val_set = dataset.validation()
    device = resolve_device(OmegaConf.select(cfg, "device", default="auto"))
    policy = build_policy(cfg, dataset).to(device)
    ema = make_ema(policy, power=t.ema_power, max_decay=t.ema_max_decay)
    optimizer = torch.optim.AdamW(
        policy.model.parameters(),
        lr=cfg.optim.lr,
        betas=tuple(cfg.optim.betas),
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    lr_schedule = get_cosine_schedule_with_warmup(optimizer, t.warmup_steps, t.num_steps)

    step, state_path = 0, run_dir / "last.pt"
    if cfg.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        policy.load_state_dict(state["policy"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_schedule.load_state_dict(state["lr_schedule"])
        torch.random.set_rng_state(state["torch_rng"].cpu())
        step = int(state["step"])
        append_log(run_dir, {"event": "resume", "step": step})
    elif OmegaConf.select(cfg, "init_from", default=None):
        step = _init_from(str(cfg.init_from), policy, ema, lr_schedule)
        append_log(run_dir, {"event": "init_from", "path": str(cfg.init_from), "step": step})

    export_path = run_dir / "policy_ema.safetensors"
    recipe = {"run_dir": str(run_dir), "config": OmegaConf.to_container(cfg, resolve=True)}

    def checkpoint(current_step: int, wall: float) -> None:
        tmp = state_path.with_suffix(".tmp")
        torch.save(
            {
                "policy": policy.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lr_schedule": lr_schedule.state_dict(),
                "torch_rng": torch.random.get_rng_state(),
                "step": current_step,
            },
            tmp,
        )
        tmp.replace(state_path)
        save_policy(ema.module, export_path, {**recipe, "train_steps": current_step, "train_wall_s": wall})

    # The batch order depends on (seed, step) alone, and the loader draws nothing from the global RNG, so a
    # resumed run sees exactly the batches (and noise) of an uninterrupted one.
    sampler = ResumableBatchSampler(len(dataset), t.batch_size, seed=int(cfg.seed), position=step)
    batches = iter(DataLoader(dataset, batch_sampler=sampler, generator=torch.Generator()))
    prior_wall = _previous_wall(run_dir)
    start, window_loss, window_n = time.time(), 0.0, 0
    policy.train()
    with tqdm(total=t.num_steps, initial=step, desc="train", dynamic_ncols=True) as bar:
        while step < t.num_steps:
            loss = policy.compute_loss(to_device(next(batches), device))
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"training loss became {loss_value} at step {step}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            ema.update_parameters(policy)
            step += 1
            window_loss, window_n = window_loss + loss_value, window_n + 1
            bar.update(1)
            wall = prior_wall + time.time() - start
            if step % t.log_every == 0 or step == t.num_steps:
                record = {
                    "event": "train",
                    "step": step,
                    "loss": window_loss / window_n,
                    "lr": lr_schedule.get_last_lr()[0],
                    "wall_s": round(wall, 1),
                }
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                window_loss, window_n = 0.0, 0
                if t.val_every and (step % t.val_every == 0 or step == t.num_steps):
                    record["val_loss"] = validation_loss(ema.module, val_set, t.batch_size)
                append_log(run_dir, record)
            if step % t.ckpt_every == 0 or step == t.num_steps:
                checkpoint(step, wall)
            if t.rollout_every and (step % t.rollout_every == 0 or step == t.num_steps):
                append_log(run_dir, {"event": "rollout", "step": step, **_rollout_score(cfg, ema.module)})
    return export_path


def _init_from(path: str, policy: DiffusionPolicy, ema: Any, lr_schedule: Any) -> int:
    """Start from an exported EMA checkpoint (a committed one, when ``runs/`` was lost): its weights become the
    model and the EMA, and the step count (its ``train_steps``) continues the LR schedule; the optimiser's
    moments start afresh."""
    from policy_accel.model.checkpoint_io import CheckpointError, load_state_checked, read_checkpoint
    from policy_accel.policy.loading import FORMAT

    tensors, _, meta = read_checkpoint(path, FORMAT)
    device = policy.device
    tensors = {k: v.to(device) for k, v in tensors.items()}
    try:
        load_state_checked(policy, tensors, f"init_from '{path}'")
        load_state_checked(ema.module, tensors, f"init_from '{path}'")
    except CheckpointError as exc:
        raise ValueError(f"init_from '{path}' does not fit this run's policy: {exc}") from None
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else meta
    step = int(extra.get("train_steps", 0))  # save_policy's metadata: the recipe and steps of the export
    with warnings.catch_warnings():  # stepping the schedule before any optimiser step is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(step):
            lr_schedule.step()
    return step


def _previous_wall(run_dir: Path) -> float:
    """Wall time already spent by earlier runs of a resumed job (from the log)."""
    wall = 0.0
    log = run_dir / "log.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            wall = max(wall, float(record.get("wall_s", 0.0)))
    return wall


def _rollout_score(cfg: DictConfig, policy: DiffusionPolicy) -> dict[str, Any]:
    """Mean max reward of the EMA policy on a few test seeds (imported lazily: needs the env)."""
    from policy_accel.eval.rollout import evaluate_policy

    was_training = policy.training
    policy.eval()
    if OmegaConf.select(cfg, "compile", default=False):  # a fresh compiled copy: compiled code bakes in weights
        policy = copy.deepcopy(policy).compile(cfg.compile)
    result = evaluate_policy(  # Meta-World: every task on every seed
        policy,
        sampler=cfg.train.rollout_sampler,
        env_cfg=cfg.env,
        seeds=list(range(cfg.train.rollout_seed_start, cfg.train.rollout_seed_start + cfg.train.rollout_n_seeds)),
        progress=False,
    )
    policy.train(was_training)
    return {
        "sampler": cfg.train.rollout_sampler,
        "mean_max_reward": result["mean_max_reward"],
        "success_rate": result["success_rate"],
    }
