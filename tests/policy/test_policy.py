"""U-Net shapes and key names, policy queue semantics, checkpoint round-trip and errors, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_policy
from omegaconf import OmegaConf
from safetensors.torch import save_file

import policy_accel
from policy_accel.data.replay_buffer import ReplayBuffer
from policy_accel.model.conditional_unet1d import ConditionalUnet1D
from policy_accel.policy.loading import CheckpointError, load_policy, save_policy


def test_unet_output_shape_and_timestep_forms():
    net = ConditionalUnet1D(
        2, global_cond_dim=40, diffusion_step_embed_dim=16, down_dims=(16, 32, 64), kernel_size=5, n_groups=4
    )
    x = torch.randn(5, 16, 2)
    cond = torch.randn(5, 40)
    assert net(x, torch.arange(5), cond).shape == (5, 16, 2)
    assert torch.allclose(net(x, 7, cond), net(x, torch.full((5,), 7), cond))


def test_unet_state_dict_keys_follow_diffusion_policy():
    net = ConditionalUnet1D(
        2, global_cond_dim=40, diffusion_step_embed_dim=16, down_dims=(16, 32), kernel_size=3, n_groups=4
    )
    keys = set(net.state_dict())

    def block(prefix, residual):
        names = {f"{prefix}.blocks.{i}.block.{j}.{p}" for i in (0, 1) for j in (0, 1) for p in ("weight", "bias")}
        names |= {f"{prefix}.cond_encoder.1.weight", f"{prefix}.cond_encoder.1.bias"}
        if residual:
            names |= {f"{prefix}.residual_conv.weight", f"{prefix}.residual_conv.bias"}
        return names

    expected = {f"diffusion_step_encoder.{i}.{p}" for i in (1, 3) for p in ("weight", "bias")}
    expected |= block("down_modules.0.0", True) | block("down_modules.0.1", False)
    expected |= {"down_modules.0.2.conv.weight", "down_modules.0.2.conv.bias"}
    expected |= block("down_modules.1.0", True) | block("down_modules.1.1", False)
    expected |= block("mid_modules.0", False) | block("mid_modules.1", False)
    expected |= block("up_modules.0.0", True) | block("up_modules.0.1", False)
    expected |= {"up_modules.0.2.conv.weight", "up_modules.0.2.conv.bias"}
    expected |= {f"final_conv.0.block.{j}.{p}" for j in (0, 1) for p in ("weight", "bias")}
    expected |= {"final_conv.1.weight", "final_conv.1.bias"}
    assert keys == expected
    assert net.state_dict()["down_modules.0.0.cond_encoder.1.weight"].shape == (2 * 16, 16 + 40)


def test_select_action_queue_replans_every_n_action_steps():
    policy = tiny_policy()
    calls = []
    original = policy.predict_action_chunk
    policy.predict_action_chunk = lambda obs: calls.append(obs.clone()) or original(obs)
    policy.reset(seed=0)
    obs = np.full(20, 100.0)
    actions = [policy.select_action(obs + i) for i in range(17)]
    assert len(calls) == 3  # steps 0, 8, 16
    assert calls[0].shape == (1, 2, 20)
    assert torch.equal(calls[0][0, 0], calls[0][0, 1])  # first step pads history with the first obs
    assert torch.allclose(calls[1][0, 1], torch.full((20,), 108.0)) and torch.allclose(
        calls[1][0, 0], torch.full((20,), 107.0)
    )
    assert all(a.shape == (2,) for a in actions)


def test_select_action_uses_chunk_slice_after_last_observation():
    policy = tiny_policy()
    policy.reset(seed=3)
    obs = np.full(20, 50.0)
    first = policy.select_action(obs)
    policy.reset(seed=3)
    chunk = policy.predict_action_chunk(np.stack([obs, obs])[None])
    assert np.allclose(first, chunk[0, policy.config.n_obs_steps - 1].numpy(), atol=1e-5)


def test_seeded_reset_gives_identical_actions_and_batches_work():
    policy = tiny_policy()
    policy.reset(seed=1)
    a = [policy.select_action(np.full((3, 20), 10.0)) for _ in range(9)]
    policy.reset(seed=1)
    b = [policy.select_action(np.full((3, 20), 10.0)) for _ in range(9)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert a[0].shape == (3, 2)


@pytest.mark.parametrize(
    "obs,error,match",
    [
        (np.zeros(19), ValueError, "shape"),
        (np.full(20, np.nan), ValueError, "NaN"),
        (np.array(["a"] * 20), TypeError, "numeric"),
    ],
)
def test_bad_observations_are_rejected(obs, error, match):
    policy = tiny_policy()
    with pytest.raises(error, match=match):
        policy.select_action(obs)


def test_changing_batch_without_reset_is_an_error():
    policy = tiny_policy()
    policy.select_action(np.zeros((2, 20)))
    with pytest.raises(ValueError, match="reset"):
        policy.select_action(np.zeros((3, 20)))


def test_checkpoint_round_trip(tmp_path):
    policy = tiny_policy()
    path = save_policy(policy, tmp_path / "p.safetensors", {"note": "test"})
    loaded = policy_accel.load(path, sampler="ddim-3")
    for key, value in policy.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert loaded.config == policy.config
    obs = np.random.default_rng(0).uniform(0, 512, (1, 2, 20))
    policy.generator.manual_seed(4)
    loaded.generator.manual_seed(4)
    assert torch.allclose(policy.predict_action_chunk(obs), loaded.predict_action_chunk(obs))


def test_load_with_sampler_options(tmp_path):
    path = save_policy(tiny_policy(), tmp_path / "p.safetensors")
    policy = policy_accel.load(path, sampler="paraddim", num_steps=10, window=4, tolerance=0.05)
    assert policy.sampler.window == 4 and policy.sampler.solver.num_steps == 10


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_policy(tmp_path / "missing.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_policy(corrupt)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a policy_accel"):
        load_policy(foreign)

    policy = tiny_policy()
    state = {k: v.clone() for k, v in policy.state_dict().items()}
    config = json.dumps(policy.config.to_dict())
    meta = {"format": "policy_accel.diffusion_policy/1", "config": config}
    bad_shape = dict(state)
    bad_shape["model.final_conv.1.weight"] = torch.zeros(3, 16, 1)
    save_file(bad_shape, str(tmp_path / "shape.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="model.final_conv.1.weight"):
        load_policy(tmp_path / "shape.safetensors")
    missing = {k: v for k, v in state.items() if k != "normalizer.fields.obs.min"}
    save_file(missing, str(tmp_path / "keys.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="missing keys.*normalizer.fields.obs.min"):
        load_policy(tmp_path / "keys.safetensors")
    nan = dict(state)
    nan["model.final_conv.1.bias"] = torch.full_like(state["model.final_conv.1.bias"], float("nan"))
    save_file(nan, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="NaN"):
        load_policy(tmp_path / "nan.safetensors")
    bad_config = {**meta, "config": json.dumps({**policy.config.to_dict(), "typo_key": 1})}
    save_file(state, str(tmp_path / "config.safetensors"), metadata=bad_config)
    with pytest.raises(CheckpointError, match="typo_key"):
        load_policy(tmp_path / "config.safetensors")


def test_checkpoint_for_another_observation_size_is_rejected_by_the_env_shape(tmp_path):
    path = save_policy(tiny_policy(obs_dim=5), tmp_path / "state.safetensors")
    policy = policy_accel.load(path)
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        policy.select_action(np.zeros(20))


def _generated_buffer(tmp_path) -> str:
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer()
    for _ in range(6):
        length = 40
        t = np.linspace(0, 1, length)[:, None]
        start = rng.uniform(100, 400, 2)
        agent = start + 80 * np.hstack([np.sin(3 * t), np.cos(2 * t)])
        state = np.hstack([agent, np.full((length, 2), 256.0), np.zeros((length, 1))]).astype(np.float32)
        keypoint = np.repeat(rng.uniform(150, 350, (1, 9, 2)), length, axis=0).astype(np.float32)
        buffer.add_episode({"state": state, "keypoint": keypoint, "action": (agent + 5).astype(np.float32)})
    path = tmp_path / "tiny.zarr"
    buffer.save_zarr(path)
    return str(path)


class _Interrupted(Exception):
    """The session stops mid-run (raised in place of a training step)."""


@pytest.fixture(scope="module")
def interrupted_and_straight_runs(tmp_path_factory):
    """One 60-step run straight through, and the same run stopped right after its step-30 checkpoint and resumed."""
    from policy_accel.cli.hydra_config import load_config
    from policy_accel.train import trainer

    tmp_path = tmp_path_factory.mktemp("train")
    zarr_path = _generated_buffer(tmp_path)

    def overrides(run_dir):
        return [
            f"dataset.zarr_path={zarr_path}",
            "model=unet_tiny",
            f"run_dir={run_dir}",
            "train.batch_size=32",
            "train.log_every=10",
            "train.val_every=0",
            "train.ckpt_every=30",
            "train.warmup_steps=5",
            "train.rollout_every=0",
            "train.num_steps=60",
            "optim.lr=3e-3",
            "dataset.val_ratio=0.2",
        ]

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    exported = trainer.train(load_config("train", overrides(straight)))
    real_to_device, batches = trainer.to_device, {"n": 0}

    def stop_after_checkpoint(batch, device):
        batches["n"] += 1
        if batches["n"] > 30:  # step 31's batch: the step-30 checkpoint is on disk
            raise _Interrupted
        return real_to_device(batch, device)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer, "to_device", stop_after_checkpoint)
        with pytest.raises(_Interrupted):
            trainer.train(load_config("train", overrides(resumed)))
    assert torch.load(resumed / "last.pt", weights_only=False)["step"] == 30
    trainer.train(load_config("train", overrides(resumed)))
    return exported, straight, resumed


def _log_records(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_training_a_few_steps_lowers_loss_and_resumes(interrupted_and_straight_runs):
    exported, straight, resumed = interrupted_and_straight_runs
    losses = [r["loss"] for r in _log_records(straight) if r["event"] == "train"]
    assert losses[-1] < 0.7 * losses[0]
    assert load_policy(exported).config.obs_dim == 20
    records = _log_records(resumed)
    assert {"event": "resume", "step": 30} in records
    assert records[-1]["step"] == 60
    # the resumed run continues the schedule and the EMA count where the checkpoint left them
    lr = {r["step"]: r["lr"] for r in _log_records(straight) if r["event"] == "train"}
    assert {r["step"]: r["lr"] for r in records if r["event"] == "train" and r["step"] > 30} == {
        step: value for step, value in lr.items() if step > 30
    }
    state = torch.load(resumed / "last.pt", weights_only=False)
    assert state["step"] == 60 and int(state["ema"]["n_averaged"]) == 60


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(interrupted_and_straight_runs):
    _, straight, resumed = interrupted_and_straight_runs
    a = torch.load(straight / "last.pt", weights_only=False)
    b = torch.load(resumed / "last.pt", weights_only=False)
    for part in ("policy", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), f"{part}.{name} differs after the resume"


def test_unknown_config_key_is_an_error():
    from policy_accel.cli.hydra_config import load_config

    with pytest.raises(SystemExit, match="typo"):
        load_config("train", ["optim.typo=1"])
    cfg = load_config("train", [])
    assert OmegaConf.select(cfg, "policy.horizon") == 16


def test_warm_start_with_unlimited_budget_gives_the_cold_answer():
    sequential = tiny_policy(sampler="ddim-8")
    picard = tiny_policy(sampler={"name": "paraddim", "num_steps": 8, "window": 8, "tolerance": 1e-8})
    for policy in (sequential, picard):
        policy.warm_start = True
        policy.reset(seed=5)
    rounds = []
    for step in range(24):
        obs = np.full(20, 200.0) + 3.0 * step
        a, b = sequential.select_action(obs), picard.select_action(obs)
        assert np.allclose(a, b, atol=1e-3), step
        rounds.append(picard.last_stats.rounds)
    assert max(rounds) <= 8


def test_warm_start_shifts_noise_so_consecutive_chunks_share_it():
    policy = tiny_policy(sampler={"name": "paraddim", "num_steps": 8, "window": 8, "tolerance": 0.1})
    policy.warm_start = True
    policy.reset(seed=1)
    policy.select_action(np.full(20, 100.0))
    first = policy._warm.noise.clone()
    for _ in range(8):
        policy.select_action(np.full(20, 100.0))
    second = policy._warm.noise
    shift = policy.config.n_action_steps
    assert torch.equal(second[..., :-shift, :], first[..., shift:, :])
    policy.reset()
    assert policy._warm is None


def test_deadline_mode_returns_an_estimate_and_reports_it():
    policy = tiny_policy(sampler={"name": "paraddpm", "window": 4, "tolerance": 1e-8, "deadline_s": 1e-6})
    policy.reset(seed=0)
    action = policy.select_action(np.full(20, 300.0))
    assert np.isfinite(action).all() and policy.last_stats.hit_deadline and not policy.last_stats.converged
    chunk = policy.predict_action_chunk(np.full((1, 2, 20), 300.0), deadline_s=60.0)
    assert not policy.last_stats.hit_deadline and policy.last_stats.converged and chunk.shape == (1, 16, 2)


def test_deadline_needs_a_picard_sampler():
    policy = tiny_policy(sampler="ddim-4")
    with pytest.raises(TypeError, match="deadline"):
        policy.predict_action_chunk(np.full((1, 2, 20), 300.0), deadline_s=0.1)
    with pytest.raises(ValueError, match="deadline_s"):
        tiny_policy(sampler={"name": "paraddpm", "deadline_s": -1.0})


def test_select_action_from_several_threads_is_serialised():
    import threading
    import time

    policy = tiny_policy(sampler="ddim-2")
    sampler = policy.sampler
    active, overlaps = [0], []

    class OverlapDetector:
        """The policy's sampler, slowed down and counting how many calls run at once."""

        name, solver = sampler.name, sampler.solver

        def sample(self, *args, **kwargs):
            active[0] += 1
            overlaps.append(active[0])
            time.sleep(0.005)  # wide enough for an unserialised caller to come in
            try:
                return sampler.sample(*args, **kwargs)
            finally:
                active[0] -= 1

    policy.sampler = OverlapDetector()
    policy.reset(seed=0)
    errors, actions = [], []

    def control_thread():
        try:
            for _ in range(40):
                actions.append(policy.select_action(np.full(20, 250.0)))
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=control_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(actions) == 120
    assert overlaps and max(overlaps) == 1, f"{max(overlaps)} sampler calls ran at once"
    # serialised calls are one queue of 120 steps: the same actions as one thread on the same seed
    single = tiny_policy(sampler="ddim-2")
    single.reset(seed=0)
    expected = [single.select_action(np.full(20, 250.0)) for _ in range(120)]
    key = lambda a: tuple(np.round(a, 4))  # noqa: E731
    assert sorted(map(key, actions)) == sorted(map(key, expected))


def test_training_can_start_from_a_committed_export(tmp_path):
    """A lost runs/ folder restarts from the committed EMA weights and their step, not from scratch."""
    from policy_accel.cli.hydra_config import load_config
    from policy_accel.train.trainer import train

    zarr_path = _generated_buffer(tmp_path)
    common = [
        f"dataset.zarr_path={zarr_path}",
        "model=unet_tiny",
        "train.batch_size=32",
        "train.log_every=10",
        "train.val_every=0",
        "train.ckpt_every=30",
        "train.warmup_steps=5",
        "dataset.val_ratio=0.2",
        "train.rollout_every=0",
    ]
    exported = train(load_config("train", common + [f"run_dir={tmp_path / 'a'}", "train.num_steps=30"]))
    fresh = tmp_path / "b"
    train(load_config("train", common + [f"run_dir={fresh}", "train.num_steps=40", f"init_from={exported}"]))
    records = [json.loads(line) for line in (fresh / "log.jsonl").read_text().splitlines()]
    assert records[0] == {"event": "init_from", "path": str(exported), "step": 30}
    assert records[-1]["step"] == 40
    with pytest.raises(ValueError, match="does not fit"):
        train(
            load_config(
                "train",
                common
                + [f"run_dir={tmp_path / 'c'}", "train.num_steps=40", f"init_from={exported}", "model=unet_small"],
            )
        )
