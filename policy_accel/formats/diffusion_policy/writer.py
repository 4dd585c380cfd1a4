"""Write a policy as a Diffusion Policy workspace checkpoint (``.ckpt``), the format DP's own code loads.

For tests of the importer at shapes other than the fixtures', and for sizing runs (random weights at
DP's published sizes: ``examples/dp_size_checkpoints.py``). The payload has DP's structure (``cfg`` an
omegaconf DictConfig, ``state_dicts`` under DP's key names, ``pickles``), saved with ``torch.save`` and
pickle protocol 2 like DP's ``BaseWorkspace.save_checkpoint``. The pickle references only the globals
DP's own files do: builtin types go through ``dill._dill._load_type(name)``, as dill writes them. When
dill is not installed a stand-in ``dill._dill`` module exists only while pickling (pickle must find
the function it names); loading never calls it here (the safe unpickler answers it itself).
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import OmegaConf

from policy_accel.formats.base import PolicyLike

WORKSPACES = {
    "DiffusionUnetLowdimPolicy": "train_diffusion_unet_lowdim_workspace.TrainDiffusionUnetLowdimWorkspace",
    "DiffusionTransformerLowdimPolicy": "train_diffusion_transformer_lowdim_workspace.TrainDiffusionTransformerLowdimWorkspace",
    "DiffusionUnetHybridImagePolicy": "train_diffusion_unet_hybrid_workspace.TrainDiffusionUnetHybridWorkspace",
}
POLICY_MODULES = {
    "DiffusionUnetLowdimPolicy": "diffusion_unet_lowdim_policy",
    "DiffusionTransformerLowdimPolicy": "diffusion_transformer_lowdim_policy",
    "DiffusionUnetHybridImagePolicy": "diffusion_unet_hybrid_image_policy",
}
SCHEDULER = {
    "_target_": "diffusers.schedulers.scheduling_ddpm.DDPMScheduler",
    "num_train_timesteps": 100,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}


@contextlib.contextmanager
def _dill_load_type() -> Iterator[Any]:
    """dill's ``_load_type`` (or, without dill, a stand-in registered as ``dill._dill`` while pickling)."""
    try:
        yield importlib.import_module("dill._dill")._load_type
        return
    except ImportError:
        pass
    dill, dill_dill = types.ModuleType("dill"), types.ModuleType("dill._dill")

    def _load_type(name: str) -> type:
        raise RuntimeError("stand-in for dill._dill._load_type: only its name is written")

    _load_type.__module__, _load_type.__qualname__ = "dill._dill", "_load_type"
    dill_dill._load_type = _load_type  # type: ignore[attr-defined]
    dill._dill = dill_dill  # type: ignore[attr-defined]
    sys.modules.update({"dill": dill, "dill._dill": dill_dill})
    try:
        yield _load_type
    finally:
        for key in ("dill._dill", "dill"):
            sys.modules.pop(key, None)


def _pickle_module(load_type: Any) -> types.ModuleType:
    builtin_types = {
        dict: "dict",
        list: "list",
        tuple: "tuple",
        int: "int",
        float: "float",
        str: "str",
        bool: "bool",
        bytes: "bytes",
        type(None): "NoneType",
    }

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, type) and obj in builtin_types:
                return load_type, (builtin_types[obj],)
            return NotImplemented

    module = types.ModuleType("dp_like_pickle")
    module.Pickler = Pickler
    module.Unpickler = pickle.Unpickler
    module.dump, module.load = pickle.dump, pickle.load
    return module


def dp_state_dict(policy: PolicyLike, kind: str) -> dict[str, torch.Tensor]:
    """``policy``'s weights under Diffusion Policy's key names (the inverse of the importer's mapping)."""
    out: dict[str, torch.Tensor] = {"_dummy_variable": torch.zeros(0)}
    for key, value in policy.state_dict().items():
        if key.startswith("normalizer.fields."):
            field, _, param = key[len("normalizer.fields.") :].rpartition(".")
            out[f"normalizer.params_dict.{field}.{param}"] = value.clone()
            if param == "scale":
                for stat in ("min", "max", "mean", "std"):
                    out[f"normalizer.params_dict.{field}.input_stats.{stat}"] = torch.zeros_like(value)
            continue
        if key.startswith("obs_encoder.obs_nets."):
            head, _, rest = key[len("obs_encoder.obs_nets.") :].partition(".")
            prefix = f"obs_encoder.obs_nets.{head}."
            if rest.startswith("backbone."):
                out[prefix + "backbone.nets." + rest[len("backbone.") :]] = value
                out[prefix + "nets.0.nets." + rest[len("backbone.") :]] = value
            elif rest.startswith("pool."):
                out[prefix + rest] = value
                out[prefix + "nets.1." + rest[len("pool.") :]] = value
            elif rest.startswith("linear."):
                out[prefix + "nets.3." + rest[len("linear.") :]] = value
            continue
        out[key] = value
    if kind == "DiffusionTransformerLowdimPolicy":
        out["model._dummy_variable"] = torch.zeros(0)
        for name in ("mask", "memory_mask"):
            if getattr(policy.model, name, None) is not None:
                out[f"model.{name}"] = getattr(policy.model, name).clone()
    out["mask_generator._dummy_variable"] = torch.zeros(0)
    return out


def dp_cfg(
    policy: PolicyLike,
    kind: str,
    use_ema: bool = True,
    task: str = "pusht_lowdim",
    oa_step_convention: bool = True,
    **policy_overrides: Any,
) -> dict[str, Any]:
    """A resolved DP training config for ``policy``'s shapes, as DP's yamls lay it out."""
    c = policy.config
    policy_cfg: dict[str, Any] = {
        "_target_": f"diffusion_policy.policy.{POLICY_MODULES[kind]}.{kind}",
        "noise_scheduler": dict(SCHEDULER),
        "horizon": c.horizon,
        "n_action_steps": c.n_action_steps,
        "n_obs_steps": c.n_obs_steps,
        "num_inference_steps": 100,
    }
    unet = {
        "diffusion_step_embed_dim": c.unet.diffusion_step_embed_dim,
        "down_dims": list(c.unet.down_dims),
        "kernel_size": c.unet.kernel_size,
        "n_groups": c.unet.n_groups,
        "cond_predict_scale": c.unet.cond_predict_scale,
    }
    if kind == "DiffusionUnetLowdimPolicy":
        policy_cfg.update(
            obs_dim=c.obs_dim,
            action_dim=c.action_dim,
            obs_as_local_cond=False,
            obs_as_global_cond=True,
            pred_action_steps_only=False,
            oa_step_convention=oa_step_convention,
            model={
                "_target_": "diffusion_policy.model.diffusion.conditional_unet1d.ConditionalUnet1D",
                "input_dim": c.action_dim,
                "local_cond_dim": None,
                "global_cond_dim": c.obs_dim * c.n_obs_steps,
                **unet,
            },
        )
    elif kind == "DiffusionTransformerLowdimPolicy":
        t = c.transformer
        policy_cfg.update(
            obs_dim=c.obs_dim,
            action_dim=c.action_dim,
            obs_as_cond=True,
            pred_action_steps_only=False,
            model={
                "_target_": "diffusion_policy.model.diffusion.transformer_for_diffusion.TransformerForDiffusion",
                "input_dim": c.action_dim,
                "output_dim": c.action_dim,
                "horizon": c.horizon,
                "n_obs_steps": c.n_obs_steps,
                "cond_dim": c.obs_dim,
                "n_layer": t.n_layer,
                "n_head": t.n_head,
                "n_emb": t.n_emb,
                "p_drop_emb": t.p_drop_emb,
                "p_drop_attn": t.p_drop_attn,
                "causal_attn": t.causal_attn,
                "time_as_cond": True,
                "obs_as_cond": True,
                "n_cond_layers": t.n_cond_layers,
            },
        )
    else:
        enc = c.obs_encoder or {}
        policy_cfg.update(
            shape_meta={
                "obs": {k: {"shape": list(v["shape"]), "type": v["type"]} for k, v in (c.obs_shapes or {}).items()},
                "action": {"shape": [c.action_dim]},
            },
            obs_as_global_cond=True,
            crop_shape=enc.get("crop_shape"),
            obs_encoder_group_norm=enc.get("group_norm", True),
            eval_fixed_crop=True,
            **unet,
        )
    policy_cfg.update(policy_overrides)
    return {
        "_target_": f"diffusion_policy.workspace.{WORKSPACES[kind]}",
        "name": "test",
        "task_name": task,
        "n_latency_steps": 0,
        "past_action_visible": False,
        "policy": policy_cfg,
        "training": {"use_ema": use_ema, "seed": 42, "device": "cuda:0"},
        "task": {"name": task},
    }


def write_dp_checkpoint(
    path: str | Path,
    policy: PolicyLike,
    kind: str,
    *,
    cfg: dict[str, Any] | None = None,
    use_ema: bool = True,
    ema_policy: PolicyLike | None = None,
) -> Path:
    """Save ``policy`` as DP's ``BaseWorkspace.save_checkpoint`` would: ``ema_model`` holds ``ema_policy``
    (default: ``policy``) when ``use_ema``, ``model`` holds ``policy``."""
    if kind not in WORKSPACES:
        raise ValueError(f"unknown Diffusion Policy policy type '{kind}'; writable: {sorted(WORKSPACES)}")
    cfg = cfg if cfg is not None else dp_cfg(policy, kind, use_ema=use_ema)
    state_dicts = {"model": dp_state_dict(policy, kind)}
    if use_ema:
        state_dicts["ema_model"] = dp_state_dict(ema_policy or policy, kind)
    path = Path(path)
    with _dill_load_type() as load_type:
        payload = {
            "cfg": OmegaConf.create(cfg),
            "state_dicts": state_dicts,
            "pickles": {"global_step": b"\x80\x02K\x02.", "epoch": b"\x80\x02K\x00."},
        }
        with open(path, "wb") as handle:
            torch.save(payload, handle, pickle_module=_pickle_module(load_type), pickle_protocol=2)
    return path
