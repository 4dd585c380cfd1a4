"""Diffusion Policy ``.ckpt`` import: DP's own outputs reproduced, any shape, safe unpickling, refusals."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.paths import DP_FIXTURES, needs_shared

import policy_accel
from policy_accel.data.normalizer import AffineFieldNormalizer, Normalizer
from policy_accel.formats.diffusion_policy.checkpoint import UnsupportedCheckpointError
from policy_accel.formats.diffusion_policy.safe_pickle import UnsafePickleError, loads
from policy_accel.formats.diffusion_policy.writer import dp_cfg, write_dp_checkpoint
from policy_accel.model.checkpoint_io import CheckpointError
from policy_accel.model.config import DiffusionPolicyConfig, TransformerConfig, UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy
from policy_accel.policy.loading import load_policy

FIXTURES = DP_FIXTURES
KINDS = ["lowdim_cnn", "lowdim_transformer", "hybrid_image_cnn"]
needs_fixtures = needs_shared(FIXTURES / "lowdim_cnn.ckpt")
UNET = "DiffusionUnetLowdimPolicy"
TRANSFORMER = "DiffusionTransformerLowdimPolicy"
HYBRID = "DiffusionUnetHybridImagePolicy"


# ------------------------------------------------------------------ fixtures written by DP itself
_CACHE: dict[str, tuple[DiffusionPolicy, dict]] = {}


def fixture(name: str) -> tuple[DiffusionPolicy, dict]:
    if name not in _CACHE:
        policy = policy_accel.load(FIXTURES / f"{name}.ckpt")
        with np.load(FIXTURES / f"{name}_reference.npz") as data:
            _CACHE[name] = (policy, {k: data[k] for k in data.files})
    return _CACHE[name]


def fixture_obs(ref: dict, case: int | None = None) -> object:
    """Observation history of the reference batch (``case``: one of the network-output cases)."""
    if "obs_image" in ref:
        if case is None:
            return {"image": ref["obs_image"], "agent_pos": ref["obs_agent_pos"]}
        return {"image": ref["eps_obs_image"][case], "agent_pos": ref["eps_obs_agent_pos"][case]}
    return ref["obs"] if case is None else ref["eps_obs"][case]


def ddpm_noise(ref: dict) -> torch.Tensor:
    """DP's 100 draws (x_T, then the noise of t = 99..1) + an unused row for t = 0."""
    draws = torch.as_tensor(ref["ddpm_noise"])
    return torch.cat([draws, torch.zeros_like(draws[:1])])


@needs_fixtures
@pytest.mark.parametrize("name", KINDS)
def test_network_outputs_and_encoder_features_match_diffusion_policy(name):
    policy, ref = fixture(name)
    worst_cond = worst_eps = 0.0
    with torch.inference_mode():
        for case in range(ref["eps_x"].shape[0]):
            cond = policy.encode_obs(fixture_obs(ref, case))
            eps = policy.model(torch.as_tensor(ref["eps_x"][case]), torch.as_tensor(ref["eps_t"][case]), cond)
            worst_cond = max(
                worst_cond, float((cond - torch.as_tensor(ref["eps_cond"][case]).reshape(cond.shape)).abs().max())
            )
            worst_eps = max(worst_eps, float((eps - torch.as_tensor(ref["eps_out"][case])).abs().max()))
        if "obs_features" in ref:
            features = policy.encode_obs(fixture_obs(ref)).reshape(ref["obs_features"].shape)
            assert float((features - torch.as_tensor(ref["obs_features"])).abs().max()) <= 1e-4
    assert worst_cond <= 1e-4 and worst_eps <= 1e-4, (worst_cond, worst_eps)


# Chunk agreement with DP's own runs (env px; actions span 0..512). Measured max over the three fixtures:
# DDIM 5.2e-4, DDPM 1.3e-3 (float32 rounding over 10 / 100 steps), DDPM against diffusers 0.11.1's run 6.5e-3
# (its step differs: 5.7e-3..6.1e-3 between the two references, fixtures README). Each reference gets its own
# bound: ~5x the measured for DDIM, 3x for DDPM, which keeps it below the gap between the two diffusers steps.
DDIM_TOL_PX, DDPM_TOL_PX, DDPM_D0111_TOL_PX = 2.5e-3, 4e-3, 1e-2


@needs_fixtures
@pytest.mark.parametrize("name", KINDS)
def test_ddim_and_ddpm_chunks_match_diffusion_policy(name):
    policy, ref = fixture(name)
    obs = fixture_obs(ref)
    policy.set_sampler({"name": "ddim", "num_steps": 10, "timestep_spacing": "leading"})  # DP's DDIM: 90, 80, ..., 0
    assert policy.sampler.solver.timesteps.tolist() == ref["ddim_timesteps"].tolist()
    noise = torch.zeros((11, *ref["ddim_x_T"].shape))
    noise[0] = torch.as_tensor(ref["ddim_x_T"])
    ddim = policy.predict_action_chunk(obs, noise=noise)
    assert float((ddim - torch.as_tensor(ref["ddim_action_pred"])).abs().max()) <= DDIM_TOL_PX

    policy.set_sampler("ddpm")
    ddpm = policy.predict_action_chunk(obs, noise=ddpm_noise(ref))
    assert float((ddpm - torch.as_tensor(ref["ddpm_action_pred"])).abs().max()) <= DDPM_TOL_PX
    assert float((ddpm - torch.as_tensor(ref["ddpm_action_pred_d0111"])).abs().max()) <= DDPM_D0111_TOL_PX
    cfg = policy.config
    assert (cfg.first_action, cfg.n_action_steps) == (1, 8)  # DP's action = action_pred[:, To - 1: To - 1 + 8]
    executed = ddpm[:, cfg.first_action : cfg.first_action + cfg.n_action_steps]
    assert float((executed - torch.as_tensor(ref["ddpm_action"])).abs().max()) <= DDPM_TOL_PX


class _FixedNoise:
    """Wrap a sampler so every chunk uses the given noise (to drive select_action deterministically)."""

    def __init__(self, sampler, noise: torch.Tensor) -> None:
        self.inner, self.noise, self.name = sampler, noise, sampler.name

    def sample(self, denoiser, cond, shape, generator=None, **kwargs):
        return self.inner.sample(denoiser, cond, shape, generator=generator, noise=self.noise, **kwargs)


@needs_fixtures
@pytest.mark.parametrize("name", ["lowdim_cnn", "hybrid_image_cnn"])
def test_select_action_executes_the_aligned_slice(name):
    policy, ref = fixture(name)
    policy.set_sampler("ddpm")
    noise = ddpm_noise(ref)[:, :1]
    obs = fixture_obs(ref)
    first = {k: v[:1, 0] for k, v in obs.items()} if isinstance(obs, dict) else obs[:1, 0]
    history = (
        {k: np.repeat(v[:1, :1], 2, axis=1) for k, v in obs.items()}
        if isinstance(obs, dict)
        else np.repeat(obs[:1, :1], 2, axis=1)
    )
    chunk = policy.predict_action_chunk(history, noise=noise)
    policy.sampler = _FixedNoise(policy.sampler, noise)
    policy.reset()
    try:
        actions = [policy.select_action(first) for _ in range(policy.config.n_action_steps)]
    finally:
        policy.set_sampler("ddpm")
    np.testing.assert_allclose(np.stack(actions, 1), chunk[:, 1:9].numpy(), atol=1e-5)


@needs_fixtures
@pytest.mark.parametrize("name,solver", [("lowdim_transformer", "ddpm"), ("hybrid_image_cnn", "ddim")])
def test_picard_with_a_tiny_tolerance_equals_the_sequential_solve(name, solver):
    policy, ref = fixture(name)
    noise = (
        ddpm_noise(ref)
        if solver == "ddpm"
        else torch.randn((11, *ref["ddim_x_T"].shape), generator=torch.Generator().manual_seed(0))
    )
    steps = 100 if solver == "ddpm" else 10
    policy.set_sampler({"name": solver, "num_steps": steps})
    sequential = policy.predict_action_chunk(fixture_obs(ref), noise=noise)
    policy.set_sampler({"name": f"para{solver}", "num_steps": steps, "window": 8, "tolerance": 1e-7})
    picard = policy.predict_action_chunk(fixture_obs(ref), noise=noise)
    assert float((picard - sequential).abs().max()) <= 1e-3
    policy.set_sampler("ddpm")


@needs_fixtures
def test_every_sampler_runs_on_an_imported_policy_and_the_encoder_runs_once_per_chunk():
    policy, ref = fixture("hybrid_image_cnn")
    calls = []
    hook = policy.obs_encoder.register_forward_hook(lambda *_: calls.append(1))
    obs = {k: v[:1] for k, v in fixture_obs(ref).items()}
    try:
        for spec in (
            "ddpm-20",
            "ddim-5",
            "dpmsolver-5",
            {"name": "paraddpm", "num_steps": 20, "window": 4},
            {"name": "paraddim", "num_steps": 8, "window": "auto", "auto_candidates": [2, 4]},
            {"name": "paradpmsolver", "num_steps": 6, "window": 3},
            {"name": "paraddpm", "num_steps": 20, "window": 4, "deadline_s": 1e-4},
        ):
            policy.set_sampler(spec)
            before = len(calls)
            chunk = policy.predict_action_chunk(obs)
            assert chunk.shape == (1, 16, 2) and torch.isfinite(chunk).all()
            assert len(calls) - before == 1, f"{spec}: the encoder ran {len(calls) - before} times"
        assert policy.last_stats.hit_deadline
    finally:
        hook.remove()
        policy.set_sampler("ddpm")


# ------------------------------------------------------------ other shapes, written in DP's format
def _lowdim(
    kind: str,
    obs_dim: int,
    action_dim: int,
    horizon: int,
    n_obs: int,
    n_action: int,
    seed: int,
    unet: UnetConfig | None = None,
    transformer: TransformerConfig | None = None,
) -> DiffusionPolicy:
    torch.manual_seed(seed)
    network = "transformer" if kind == TRANSFORMER else "unet"
    config = DiffusionPolicyConfig(
        obs_dim=obs_dim,
        action_dim=action_dim,
        horizon=horizon,
        n_obs_steps=n_obs,
        n_action_steps=n_action,
        unet=unet or UnetConfig(),
        network=network,
        transformer=transformer,
    )
    gen = torch.Generator().manual_seed(seed)
    normalizer = Normalizer(
        {
            "obs": AffineFieldNormalizer(
                torch.rand(obs_dim, generator=gen) * 0.02 + 0.001, torch.randn(obs_dim, generator=gen)
            ),
            "action": AffineFieldNormalizer(
                torch.rand(action_dim, generator=gen) * 0.02 + 0.001, torch.randn(action_dim, generator=gen)
            ),
        }
    )
    policy = DiffusionPolicy(config, normalizer)
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return policy.eval()


def _hybrid(
    obs_shapes: dict, crop, seed: int, group_norm: bool = True, horizon: int = 8, n_obs: int = 2, n_action: int = 4
) -> DiffusionPolicy:
    torch.manual_seed(seed)
    low = sum(int(np.prod(v["shape"])) for v in obs_shapes.values() if v["type"] == "low_dim")
    n_rgb = sum(v["type"] == "rgb" for v in obs_shapes.values())
    config = DiffusionPolicyConfig(
        obs_type="test",
        obs_dim=64 * n_rgb + low,
        action_dim=3,
        horizon=horizon,
        n_obs_steps=n_obs,
        n_action_steps=n_action,
        unet=UnetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16),
        obs_shapes=obs_shapes,
        obs_encoder={
            "type": "robomimic",
            "crop_shape": crop,
            "num_kp": 32,
            "feature_dim": 64,
            "group_norm": group_norm,
        },
    )
    fields = {"action": AffineFieldNormalizer(torch.full((3,), 0.01), torch.zeros(3))}
    for key, entry in obs_shapes.items():
        if entry["type"] == "rgb":
            fields[key] = AffineFieldNormalizer(torch.full((1,), 2.0), torch.full((1,), -1.0))
        else:
            fields[key] = AffineFieldNormalizer(torch.full(entry["shape"], 0.01), torch.zeros(entry["shape"]))
    policy = DiffusionPolicy(config, Normalizer(fields))
    if not group_norm:  # give BatchNorm running statistics that matter
        for module in policy.obs_encoder.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return policy.eval()


def _same_actions(source: DiffusionPolicy, loaded: DiffusionPolicy, obs, steps: int = 10) -> None:
    cfg = source.config
    batch = (next(iter(obs.values())) if isinstance(obs, dict) else obs).shape[0]
    noise = torch.randn((steps + 1, batch, cfg.horizon, cfg.action_dim), generator=torch.Generator().manual_seed(1))
    source.set_sampler(f"ddim-{steps}")
    loaded.set_sampler(f"ddim-{steps}")
    expected = source.predict_action_chunk(obs, noise=noise)
    got = loaded.predict_action_chunk(obs, noise=noise)
    assert got.shape == (batch, cfg.horizon, cfg.action_dim)
    assert float((got - expected).abs().max()) <= 1e-4 * float(expected.abs().max() + 1)


@pytest.mark.parametrize(
    "kind,shape,model",
    [
        (
            UNET,
            (7, 3, 8, 3, 4),
            UnetConfig(
                down_dims=(8, 16), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16, cond_predict_scale=False
            ),
        ),
        (
            UNET,
            (5, 1, 12, 1, 12),
            UnetConfig(down_dims=(8,), kernel_size=7, n_groups=2, diffusion_step_embed_dim=8, cond_predict_scale=True),
        ),
        (TRANSFORMER, (6, 4, 10, 3, 5), TransformerConfig(n_layer=1, n_head=2, n_emb=16, n_cond_layers=0)),
        (
            TRANSFORMER,
            (3, 2, 6, 2, 3),
            TransformerConfig(n_layer=2, n_head=4, n_emb=16, causal_attn=False, n_cond_layers=1),
        ),
    ],
)
def test_other_shapes_load_with_their_own_sizes(tmp_path, kind, shape, model):
    obs_dim, action_dim, horizon, n_obs, n_action = shape
    policy = _lowdim(
        kind, *shape, seed=3, unet=model if kind == UNET else None, transformer=model if kind == TRANSFORMER else None
    )
    path = write_dp_checkpoint(tmp_path / "policy.ckpt", policy, kind)
    loaded = policy_accel.load(path, sampler="ddpm")
    cfg = loaded.config
    assert (cfg.obs_dim, cfg.action_dim, cfg.horizon, cfg.n_obs_steps, cfg.n_action_steps) == shape
    assert cfg.first_action == n_obs - 1
    _same_actions(policy, loaded, np.random.default_rng(0).uniform(0, 100, (2, n_obs, obs_dim)))
    loaded.reset(seed=0)
    assert loaded.select_action(np.zeros(obs_dim)).shape == (action_dim,)


def test_ema_weights_when_the_config_says_so_and_the_oa_step_convention(tmp_path):
    shape = (4, 2, 8, 2, 4)
    tiny = UnetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4, diffusion_step_embed_dim=8)
    model, ema = _lowdim(UNET, *shape, seed=1, unet=tiny), _lowdim(UNET, *shape, seed=2, unet=tiny)
    ema.normalizer.load_state_dict(model.normalizer.state_dict())
    obs = np.random.default_rng(0).uniform(0, 100, (2, 2, 4))
    with_ema = policy_accel.load(write_dp_checkpoint(tmp_path / "ema.ckpt", model, UNET, ema_policy=ema))
    _same_actions(ema, with_ema, obs)
    without = policy_accel.load(
        write_dp_checkpoint(tmp_path / "model.ckpt", model, UNET, cfg=dp_cfg(model, UNET, use_ema=False))
    )
    _same_actions(model, without, obs)
    shifted = policy_accel.load(
        write_dp_checkpoint(tmp_path / "oa.ckpt", model, UNET, cfg=dp_cfg(model, UNET, oa_step_convention=False))
    )
    assert shifted.config.first_action == 2  # DP: start = n_obs_steps without the convention
    cfg = dp_cfg(model, UNET)
    cfg["training"]["use_ema"] = True
    path = tmp_path / "noema.ckpt"
    write_dp_checkpoint(path, model, UNET, cfg=cfg, use_ema=False)
    with pytest.raises(CheckpointError, match="ema_model"):
        policy_accel.load(path)


@pytest.mark.parametrize("group_norm", [True, False])
def test_a_hybrid_policy_of_other_shapes_and_dict_observations(tmp_path, group_norm):
    shapes = {
        "eef": {"shape": [3], "type": "low_dim"},
        "cam": {"shape": [3, 40, 48], "type": "rgb"},
        "grip": {"shape": [1], "type": "low_dim"},
    }
    policy = _hybrid(shapes, crop=[32, 40], seed=0, group_norm=group_norm)
    loaded = policy_accel.load(write_dp_checkpoint(tmp_path / "hybrid.ckpt", policy, HYBRID))
    assert list(loaded.config.obs_shapes) == ["eef", "cam", "grip"] and loaded.config.obs_dim == 68
    rng = np.random.default_rng(0)
    obs = {
        "eef": rng.uniform(0, 50, (2, 2, 3)).astype(np.float32),
        "cam": rng.uniform(0, 1, (2, 2, 3, 40, 48)).astype(np.float32),
        "grip": rng.uniform(0, 1, (2, 2, 1)).astype(np.float32),
    }
    _same_actions(policy, loaded, obs)
    loaded.reset(seed=0)
    step = {k: v[0, 0] for k, v in obs.items()}
    assert loaded.select_action(step).shape == (3,)
    assert loaded.select_action({k: v[0, 0] for k, v in obs.items()}).shape == (3,)
    with pytest.raises(ValueError, match=r"missing keys \['grip'\]"):
        loaded.select_action({"eef": step["eef"], "cam": step["cam"]})
    with pytest.raises(ValueError, match=r"obs_history\['cam'\] must have shape \(batch, 2, 3, 40, 48\)"):
        loaded.predict_action_chunk({**obs, "cam": obs["cam"][..., :32]})
    with pytest.raises(TypeError, match="uint8"):
        loaded.predict_action_chunk({**obs, "cam": (obs["cam"] * 255).astype(np.uint8)})
    with pytest.raises(TypeError, match="must be a dict"):
        loaded.select_action(np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        loaded.predict_action_chunk({**obs, "eef": np.full((2, 2, 3), np.nan)})


def test_convert_writes_a_safetensors_file_with_the_same_actions(tmp_path, capsys):
    from policy_accel.cli.main import main

    shapes = {"image": {"shape": [3, 36, 36], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}}
    policy = _hybrid(shapes, crop=[32, 32], seed=4)
    ckpt = write_dp_checkpoint(tmp_path / "in.ckpt", policy, HYBRID)
    out = tmp_path / "out.safetensors"
    main(["convert", str(ckpt), str(out)])
    assert "wrote" in capsys.readouterr().out
    converted = policy_accel.load(out)
    rng = np.random.default_rng(1)
    obs = {
        "image": rng.uniform(0, 1, (1, 2, 3, 36, 36)).astype(np.float32),
        "agent_pos": rng.uniform(0, 500, (1, 2, 2)).astype(np.float32),
    }
    _same_actions(policy, converted, obs)
    with pytest.raises(SystemExit, match="exists"):
        main(["convert", str(ckpt), str(out)])
    with pytest.raises(SystemExit, match="not a readable"):
        main(["convert", str(_truncated(ckpt, tmp_path)), str(tmp_path / "x.safetensors")])


# --------------------------------------------------------------------------- refusals
def _truncated(path: Path, tmp_path: Path) -> Path:
    data = path.read_bytes()
    out = tmp_path / "truncated.ckpt"
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    policy = _lowdim(
        UNET,
        4,
        2,
        8,
        2,
        4,
        seed=0,
        unet=UnetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4, diffusion_step_embed_dim=8),
    )
    return write_dp_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.ckpt", policy, UNET)


def test_truncated_and_corrupt_checkpoints_are_refused(tmp_path, small_ckpt):
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_policy(_truncated(small_ckpt, tmp_path))
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_policy(garbage)
    empty_zip = tmp_path / "empty.ckpt"
    with zipfile.ZipFile(empty_zip, "w") as archive:
        archive.writestr("archive/readme.txt", "no pickle here")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_policy(empty_zip)
    not_a_workspace = tmp_path / "list.ckpt"
    torch.save([1, 2, 3], not_a_workspace)
    with pytest.raises(CheckpointError, match="not a Diffusion Policy workspace checkpoint"):
        load_policy(not_a_workspace)
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "missing.ckpt")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    evil = tmp_path / "evil.ckpt"
    torch.save({"cfg": {}, "state_dicts": {"model": _Exploit()}}, evil)  # torch zip format
    with pytest.raises(CheckpointError, match=r"refusing to unpickle global '(posix|os|nt)\.system'"):
        load_policy(evil)
    raw = tmp_path / "evil_raw.ckpt"
    raw.write_bytes(pickle.dumps({"cfg": _Exploit()}, protocol=2))  # a bare pickle stream
    with pytest.raises(CheckpointError, match="system"):
        load_policy(raw)
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        loads(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    assert not marker.exists()


def test_unsupported_types_and_options_are_refused_by_name(tmp_path):
    tiny = UnetConfig(down_dims=(8, 16), kernel_size=3, n_groups=4, diffusion_step_embed_dim=8)
    policy = _lowdim(UNET, 4, 2, 8, 2, 4, seed=0, unet=tiny)

    def refused(match: str, **changes) -> None:
        cfg = dp_cfg(policy, UNET)
        for key, value in changes.items():
            target = cfg["policy"]
            *parents, last = key.split("__")
            for parent in parents:
                target = target[parent]
            target[last] = value
        path = write_dp_checkpoint(tmp_path / "x.ckpt", policy, UNET, cfg=cfg)
        with pytest.raises(UnsupportedCheckpointError, match=match):
            load_policy(path)

    refused(
        "'DiffusionUnetImagePolicy' is not supported",
        _target_="diffusion_policy.policy.diffusion_unet_image_policy.DiffusionUnetImagePolicy",
    )
    refused("'BETPolicy' is not supported", _target_="diffusion_policy.policy.bet_lowdim_policy.BETPolicy")
    refused("obs_as_local_cond", obs_as_local_cond=True)
    refused("pred_action_steps_only", pred_action_steps_only=True)
    refused("obs_as_global_cond", obs_as_global_cond=False)
    refused("variance_type='fixed_large'", noise_scheduler__variance_type="fixed_large")
    refused("prediction_type='sample'", noise_scheduler__prediction_type="sample")
    refused(
        "'DPMSolverMultistepScheduler' is not supported",
        noise_scheduler___target_="diffusers.DPMSolverMultistepScheduler",
    )


def test_load_policy_dispatches_a_directory_to_the_lerobot_reader(tmp_path, monkeypatch):
    """A real (small) LeRobot folder: the load goes through LeRobotFormat.read (spied on, not replaced) and the
    policy carries LeRobot's feature names, the folder's U-Net weights and plans finite chunks."""
    from helpers.lerobot import lerobot_unet_key, state_obs, write_policy_folder
    from safetensors.torch import load_file

    from policy_accel.formats.lerobot.checkpoint import LeRobotFormat

    inputs = {
        "observation.state": {"type": "STATE", "shape": [3]},
        "observation.environment_state": {"type": "ENV", "shape": [6]},
    }
    folder = write_policy_folder(
        tmp_path / "pretrained_model", inputs, action_dim=4, horizon=8, n_obs_steps=3, n_action_steps=4
    )
    seen, real_read = [], LeRobotFormat.read

    def read(self, path):
        seen.append(Path(path))
        return real_read(self, path)

    monkeypatch.setattr(LeRobotFormat, "read", read)
    policy = load_policy(folder, sampler="ddim-4")
    assert seen == [folder]
    assert policy.config.obs_type == "lerobot" and set(policy.config.obs_shapes) == set(inputs)
    assert policy.config.obs_encoder["state_key"] == "observation.state"
    assert policy.config.obs_encoder["env_state_key"] == "observation.environment_state"
    assert (policy.config.obs_dim, policy.config.action_dim, policy.config.horizon) == (9, 4, 8)
    folder_weights = load_file(str(folder / "model.safetensors"))
    for key, value in policy.model.state_dict().items():
        assert torch.equal(value, folder_weights["diffusion.unet." + lerobot_unet_key(key)]), key
    chunk = policy.predict_action_chunk(state_obs(2, {k: v["shape"] for k, v in inputs.items()}, steps=3))
    assert tuple(chunk.shape) == (2, 8, 4) and torch.isfinite(torch.as_tensor(chunk)).all()


def test_project_safetensors_still_load_and_array_policies_refuse_dicts(tmp_path):
    from helpers import tiny_policy

    from policy_accel.policy.loading import save_policy

    policy = tiny_policy()
    path = save_policy(policy, tmp_path / "p.safetensors")
    loaded = policy_accel.load(path, sampler="ddim-3")
    assert loaded.config.network == "unet" and loaded.obs_encoder is None
    with pytest.raises(TypeError):
        loaded.select_action({"obs": np.zeros(20)})
