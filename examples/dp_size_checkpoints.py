"""Write Diffusion Policy-format checkpoints of DP's published PushT sizes, with random weights.

For cost measurements (``policy-accel profile``) at the size people actually run, not the project's
4.6M-parameter teacher: the low-dim CNN (ConditionalUnet1D, down_dims 256/512/1024, step embedding 256)
and the hybrid image CNN (the same U-Net conditioned on a robomimic ResNet-18 + SpatialSoftmax encoder).
Random weights cost what trained ones do; only the sampler's round count depends on training, which is
why the latency prediction uses rounds measured on the shipped teacher.

    python examples/dp_size_checkpoints.py OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from policy_accel.data.normalizer import AffineFieldNormalizer, Normalizer
from policy_accel.formats.diffusion_policy.writer import dp_cfg, write_dp_checkpoint
from policy_accel.model.config import DiffusionPolicyConfig, UnetConfig
from policy_accel.policy.diffusion_policy import DiffusionPolicy

PUBLISHED_UNET = UnetConfig(
    down_dims=(256, 512, 1024), kernel_size=5, n_groups=8, diffusion_step_embed_dim=256, cond_predict_scale=True
)
PUSHT = dict(action_dim=2, horizon=16, n_obs_steps=2, n_action_steps=8)


def _affine(dim: int, scale: float, offset: float) -> AffineFieldNormalizer:
    return AffineFieldNormalizer(torch.full((dim,), scale), torch.full((dim,), offset))


def lowdim_cnn() -> DiffusionPolicy:
    config = DiffusionPolicyConfig(obs_dim=20, unet=PUBLISHED_UNET, **PUSHT)
    return DiffusionPolicy(config, Normalizer({"obs": _affine(20, 2 / 512, -1.0), "action": _affine(2, 2 / 512, -1.0)}))


def hybrid_image_cnn() -> DiffusionPolicy:
    obs_shapes = {"image": {"shape": [3, 96, 96], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}}
    config = DiffusionPolicyConfig(
        obs_type="pixels_agent_pos",
        obs_dim=66,
        unet=PUBLISHED_UNET,
        obs_shapes=obs_shapes,
        obs_encoder={"type": "robomimic", "crop_shape": [84, 84], "num_kp": 32, "feature_dim": 64, "group_norm": True},
        **PUSHT,
    )
    fields = {
        "action": _affine(2, 2 / 512, -1.0),
        "image": _affine(1, 2.0, -1.0),
        "agent_pos": _affine(2, 2 / 512, -1.0),
    }
    return DiffusionPolicy(config, Normalizer(fields))


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, build, kind, task in (
        ("lowdim_cnn_published", lowdim_cnn, "DiffusionUnetLowdimPolicy", "pusht_lowdim"),
        ("hybrid_image_cnn_published", hybrid_image_cnn, "DiffusionUnetHybridImagePolicy", "pusht_image"),
    ):
        policy = build().eval()
        path = write_dp_checkpoint(
            out / f"{name}.ckpt", policy, kind, cfg=dp_cfg(policy, kind, use_ema=False, task=task), use_ema=False
        )
        params = sum(p.numel() for p in policy.parameters())
        print(f"{path}: {kind}, {params / 1e6:.1f}M parameters")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", help="folder to write the two .ckpt files into")
    main(parser.parse_args().out_dir)
