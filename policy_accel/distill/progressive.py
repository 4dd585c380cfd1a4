"""Progressive distillation (Salimans & Ho, ICLR 2022) of a Diffusion Policy teacher.

Round k trains a student, initialised from the current teacher's weights, so that one
student DDIM step ``t -> t''`` reproduces two teacher DDIM steps ``t -> t' -> t''``;
the student then becomes the teacher and the step count halves (64 -> 32 -> ... -> 1).

Choices, and why:

* **Timesteps**: the teacher's own integer timesteps, on diffusers' "trailing" grid of
  N steps from t=99 down to the clean end point (t=-1). The teacher network only saw
  integer timesteps in training, so every evaluation stays on inputs it knows, and the
  grids nest exactly under halving (``grid(N) == grid(2N)[::2]``), so one student step
  covers precisely two teacher steps. The first teacher is the epsilon network run as
  DDIM on the 64-step grid.
* **Parameterisation**: students predict ``v = alpha eps - sigma x`` and are trained on
  ``x`` with the paper's truncated-SNR weight ``max(alpha^2 / sigma^2, 1)``. Epsilon
  prediction breaks at few steps: at t=99 of this schedule ``x = (z - sigma eps) / alpha``
  divides by alpha ~ 5e-4. A student with the teacher's U-Net starts from the epsilon
  teacher's weights (at low noise v ~ eps, so they are a good start) and is converted while
  it learns its first round. Either way the teacher is converted by distillation, never
  retrained on the data.
* **Narrower student** (optional ``student_unet``, the shipped recipe): the first student
  may have a narrower U-Net than the teacher. It then starts from a fresh initialisation
  (there are no weights to copy) and learns the round-1 target, the teacher's two-step
  DDIM result, directly; every later round copies it as usual. The step count alone
  cannot beat ``100 / N`` times the teacher's latency, since each student call costs a
  teacher call; a cheaper network per call can.
* **Target** (closed form): ``x~ = (z'' - (sigma''/sigma) z) / (alpha'' - (sigma''/sigma) alpha)``,
  the clean chunk for which one DDIM step from ``z`` lands on the teacher's ``z''``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from policy_accel.data.batches import ResumableBatchSampler
from policy_accel.data.datasets import PushTDataset
from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.model.config import UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.samplers.solvers import (
    DDIMSolver,
    StepSolver,
    VPredictionDDIMSolver,
    abar_at,
    ddpm_scheduler_config,
    shared_schedule,
    trailing_grid,
)
from policy_accel.samplers.student import StudentSampler, save_student, unet_from_policy_config


@dataclass
class DistillTarget:
    """The teacher of one round: a network and the solver that steps it on grid(2N)."""

    network: nn.Module
    solver: StepSolver

    @torch.no_grad()
    def two_steps(self, z: torch.Tensor, first_index: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Two teacher steps from rows ``z`` at grid(2N) indices ``first_index`` (per row)."""
        x = z
        for offset in (0, 1):
            index = first_index + offset
            out = self.network(x, self.solver.tables(x.device)[0][index], cond)
            x, _ = self.solver.mean_next(out, index, x)
        return x


def distillation_target(
    z: torch.Tensor,
    z_next: torch.Tensor,
    alpha: torch.Tensor,
    sigma: torch.Tensor,
    alpha_next: torch.Tensor,
    sigma_next: torch.Tensor,
) -> torch.Tensor:
    """The ``x`` for which one DDIM step from ``z`` (alpha, sigma) lands on ``z_next`` (alpha'', sigma'')."""
    ratio = sigma_next / sigma
    return (z_next - ratio * z) / (alpha_next - ratio * alpha)


def student_loss(
    student: nn.Module,
    teacher: DistillTarget,
    x: torch.Tensor,
    cond: torch.Tensor,
    student_grid: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Truncated-SNR-weighted x-space loss of one batch (Salimans & Ho, Algorithm 2)."""
    batch = x.shape[0]
    n = len(student_grid) - 1
    # draws from the (CPU) generator, then moved: the same draws on every device
    k = torch.randint(0, n, (batch,), generator=generator).to(x.device)
    student_grid = student_grid.to(x.device)
    t, t_next = student_grid[k], student_grid[k + 1]
    abar, abar_next = abar_at(alphas_cumprod, t).float(), abar_at(alphas_cumprod, t_next).float()
    shape = (batch, 1, 1)
    alpha, sigma = abar.sqrt().view(shape), (1 - abar).sqrt().view(shape)
    alpha_next, sigma_next = abar_next.sqrt().view(shape), (1 - abar_next).sqrt().view(shape)
    eps = torch.randn(x.shape, generator=generator).to(x.device)
    z = alpha * x + sigma * eps
    z_next = teacher.two_steps(z, 2 * k, cond)
    target = distillation_target(z, z_next, alpha, sigma, alpha_next, sigma_next)
    x_hat = alpha * z - sigma * student(z, t, cond)
    weight = torch.clamp(alpha**2 / sigma**2, min=1.0)
    return (weight * (target - x_hat) ** 2).mean()


def round_plan(start_steps: int, final_steps: int) -> list[int]:
    """Student step counts of each round: start/2, start/4, ..., final."""
    if start_steps & (start_steps - 1) or final_steps & (final_steps - 1) or not 1 <= final_steps < start_steps:
        raise ValueError(
            f"start_steps ({start_steps}) and final_steps ({final_steps}) must be powers of two with final < start"
        )
    plan, n = [], start_steps // 2
    while n >= final_steps:
        plan.append(n)
        n //= 2
    return plan


def training_pairs(loader: DataLoader, policy: DiffusionPolicy) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless ``(x, cond)``: normalised action chunks and flattened normalised observation history."""
    n_obs = policy.config.n_obs_steps
    while True:
        for batch in loader:
            batch = {k: v.to(policy.device, non_blocking=True) for k, v in batch.items()}
            with torch.no_grad():
                x = policy.normalizer.normalize("action", batch["action"])
                cond = policy.normalizer.normalize("obs", batch["obs"])[:, :n_obs].flatten(1)
            yield x, cond


def _same_unet(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a saved student's U-Net config matches the one this run distils into."""
    return {k: found.get(k) for k in wanted} == dict(wanted)


def _load_finished_round(path: Path, unet: Mapping[str, Any]) -> ConditionalUnet1D:
    """A finished round's student, refused if it was distilled into another U-Net than this run asks for
    (a run_dir reused with a changed ``student_unet`` would otherwise mix two chains)."""
    finished = StudentSampler.from_file(path)
    found = dict(finished.policy_config["unet"])
    if not _same_unet(found, unet):
        raise ValueError(
            f"'{path}' holds a student with U-Net {found}, but this run distils into {dict(unet)}; "
            "use another run_dir or the matching student_unet"
        )
    return finished.network


def distill(
    teacher_policy: DiffusionPolicy,
    dataset: PushTDataset,
    run_dir: str | Path,
    *,
    start_steps: int = 64,
    final_steps: int = 1,
    iterations: int = 2500,
    first_round_iterations: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-4,
    first_round_lr: float | None = None,
    ckpt_every: int = 500,
    log_every: int = 100,
    seed: int = 0,
    student_unet: Mapping[str, Any] | None = None,
    start_from: str | Path | None = None,
    evaluate: Callable[[StudentSampler], dict[str, Any]] | None = None,
    recipe: dict[str, Any] | None = None,
) -> list[Path]:
    """Run (or resume) every round; returns the student checkpoint of each round.

    ``student_unet`` (optional) gives the students a U-Net size of their own (see the
    module docstring). ``start_from`` (optional) is a finished student checkpoint that
    takes the teacher's place, so a chain can go on from a shipped student; ``start_steps``
    is then its step count. ``evaluate`` (optional) scores each finished student (e.g.
    rollouts on a few seeds); its result goes into the round's JSON log line.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = teacher_policy.config
    if config.dict_obs:
        raise ValueError(
            "distillation takes a low-dim teacher (array observations); this teacher observes "
            f"{list(config.obs_shapes or {})}"
        )
    prediction = config.noise_scheduler.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise ValueError(
            f"distillation takes an epsilon-prediction teacher; this teacher's network predicts "
            f"'{prediction}' (noise_scheduler.prediction_type): sample it with ddim/picard instead"
        )
    if config.network != "unet" and student_unet is None and start_from is None:
        raise ValueError(
            f"a '{config.network}' teacher has no U-Net weights to copy: set student_unet "
            "(e.g. student_unet.down_dims=[48,96,192])"
        )
    # the trailing grids below, whatever DDIM settings an imported checkpoint carries
    schedule = ddpm_scheduler_config(shared_schedule(config.noise_scheduler))
    device = teacher_policy.device  # the students train where the teacher lives
    alphas_cumprod = teacher_policy.noise_scheduler.alphas_cumprod.to(device)
    normalizer = teacher_policy.normalizer
    policy_config = config.to_dict()
    # Batches by position (not generator state), so a round resumed mid-way sees an uninterrupted run's batches.
    batches = ResumableBatchSampler(len(dataset), batch_size, seed=seed)
    pairs = training_pairs(DataLoader(dataset, batch_sampler=batches, generator=torch.Generator()), teacher_policy)
    consumed = 0  # batches the rounds before this one drew (a finished round drew all its iterations)

    wanted_unet, fresh_student = None, None
    if student_unet is not None:
        unet = UnetConfig.from_dict(student_unet)
        wanted_unet = {**asdict(unet), "down_dims": list(unet.down_dims)}
    if start_from is not None:
        start = StudentSampler.from_file(start_from)
        if wanted_unet is not None and not _same_unet(start.policy_config["unet"], wanted_unet):
            raise ValueError(
                f"start_from '{start_from}' has U-Net {dict(start.policy_config['unet'])}, not the "
                f"student_unet {wanted_unet}; pass the matching student_unet (or null)"
            )
        start.check_compatible(config.obs_dim, config.n_obs_steps, config.horizon, config.action_dim, normalizer)
        if start.num_steps != start_steps:
            raise ValueError(
                f"start_from '{start_from}' is a {start.num_steps}-step student, but start_steps is {start_steps}"
            )
        teacher = DistillTarget(start.network.to(device), start.solver)
        policy_config = {**policy_config, "unet": dict(start.policy_config["unet"])}
    else:
        teacher = DistillTarget(teacher_policy.model.eval(), DDIMSolver(schedule, start_steps))
        if wanted_unet is not None:
            policy_config = {**policy_config, "unet": wanted_unet, "network": "unet", "transformer": None}
            torch.manual_seed(seed)
            fresh_student = unet_from_policy_config(policy_config).to(device)
    outputs = []
    for round_index, n in enumerate(round_plan(start_steps, final_steps), start=1):
        out_path = run_dir / f"student_round{round_index}_{n}steps.safetensors"
        grid = trailing_grid(schedule["num_train_timesteps"], n)
        first = round_index == 1
        round_iterations = first_round_iterations if first and first_round_iterations else iterations
        batches.seek(consumed)
        consumed += round_iterations
        if out_path.exists():  # finished earlier: it becomes the next teacher
            student = _load_finished_round(out_path, policy_config["unet"]).to(device)
        else:
            student = _train_round(
                teacher,
                grid,
                pairs,
                alphas_cumprod,
                run_dir,
                round_index,
                n,
                round_iterations,
                first_round_lr if first and first_round_lr else lr,
                ckpt_every,
                log_every,
                seed,
                init=fresh_student if first else None,
                batches=batches,
            )
            save_student(
                student,
                normalizer,
                policy_config,
                grid,
                out_path,
                recipe={**(recipe or {}), "round": round_index, "teacher_steps": 2 * n},
            )
            record: dict[str, Any] = {
                "event": "round_done",
                "round": round_index,
                "steps": n,
                "checkpoint": str(out_path),
            }
            if evaluate is not None:
                record.update(evaluate(StudentSampler.from_file(out_path)))
            _log(run_dir, record)
            (run_dir / "round_state.pt").unlink(missing_ok=True)
        outputs.append(out_path)
        teacher = DistillTarget(student.eval(), VPredictionDDIMSolver(schedule, grid))
    return outputs


def _train_round(
    teacher: DistillTarget,
    grid: torch.Tensor,
    pairs: Iterator[tuple[torch.Tensor, torch.Tensor]],
    alphas_cumprod: torch.Tensor,
    run_dir: Path,
    round_index: int,
    n: int,
    iterations: int,
    lr: float,
    ckpt_every: int,
    log_every: int,
    seed: int,
    init: nn.Module | None = None,
    batches: ResumableBatchSampler | None = None,
) -> nn.Module:
    student = copy.deepcopy(init if init is not None else teacher.network).train()
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: max(0.0, 1.0 - it / iterations))
    start, state_path = 0, run_dir / "round_state.pt"
    if state_path.exists():
        state = torch.load(state_path, map_location=next(student.parameters()).device, weights_only=False)
        if state["round"] == round_index:
            try:
                student.load_state_dict(state["student"])
            except RuntimeError as exc:
                raise ValueError(
                    f"'{state_path}' holds a half-trained student of another U-Net than this run's; "
                    f"use another run_dir or the matching student_unet ({exc})"
                ) from exc
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            start = int(state["iteration"])
            _log(run_dir, {"event": "resume", "round": round_index, "iteration": start})
    generator = torch.Generator().manual_seed(seed + 1000 * round_index)
    if start:  # continue the uninterrupted run's noise and batches
        generator.set_state(state["generator"])
        if batches is not None:
            batches.seek(batches.position + start)
    began, window = time.time(), []
    with tqdm(
        total=iterations, initial=start, desc=f"distill round {round_index} ({2 * n}->{n} steps)", dynamic_ncols=True
    ) as bar:
        for iteration in range(start, iterations):
            x, cond = next(pairs)
            loss = student_loss(student, teacher, x, cond, grid, alphas_cumprod, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            value = loss.item()
            if value != value:
                raise FloatingPointError(f"distillation loss became NaN in round {round_index} at {iteration}")
            window.append(value)
            bar.update(1)
            done = iteration + 1
            if done % log_every == 0 or done == iterations:
                _log(
                    run_dir,
                    {
                        "event": "train",
                        "round": round_index,
                        "steps": n,
                        "iteration": done,
                        "loss": sum(window) / len(window),
                        "lr": schedule.get_last_lr()[0],
                        "wall_s": round(time.time() - began, 1),
                    },
                )
                bar.set_postfix(loss=f"{sum(window) / len(window):.4f}")
                window = []
            if done % ckpt_every == 0 and done < iterations:
                tmp = state_path.with_suffix(".tmp")
                torch.save(
                    {
                        "round": round_index,
                        "iteration": done,
                        "student": student.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "schedule": schedule.state_dict(),
                        "generator": generator.get_state(),
                    },
                    tmp,
                )
                tmp.replace(state_path)
    return student.eval()


def _log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / "log.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
