"""Diffusion Policy's transformer noise predictor (``TransformerForDiffusion``, obs-as-condition variant).

The noisy action chunk is the decoder's token sequence; the memory it cross-attends to is
``[diffusion-step embedding, one token per observation frame]`` passed through a small MLP (or a
transformer encoder when ``n_cond_layers > 0``). With ``causal_attn`` an action token sees only
earlier action tokens and the step token plus the observation frames up to its own index. Module
names follow Diffusion Policy's so its state_dict (``decoder.layers.0.self_attn.in_proj_weight``,
``cond_pos_emb``...) loads unchanged; the attention masks are rebuilt from the sizes rather than
stored (DP stores them; its importer checks they agree).

It honours the project's denoiser protocol ``eps = net(x, t, cond)`` with ``cond`` 2-D,
``(N, n_obs_steps * cond_dim)``: the frames are unflattened here, so samplers (Picard's
``cond.repeat(window, 1)`` included) never need to know the network wants tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from policy_accel.model.conditional_unet1d import SinusoidalPosEmb


def _additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    """Boolean "may attend" -> torch's additive float mask (0 where allowed, -inf elsewhere)."""
    return torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))


class TransformerForDiffusion(nn.Module):
    """``(x (N, horizon, input_dim), t (N,), cond (N, n_obs_steps * cond_dim)) -> (N, horizon, output_dim)``."""

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        horizon: int,
        n_obs_steps: int,
        cond_dim: int,
        n_layer: int = 8,
        n_head: int = 4,
        n_emb: int = 256,
        p_drop_emb: float = 0.0,
        p_drop_attn: float = 0.3,
        causal_attn: bool = True,
        n_cond_layers: int = 0,
    ) -> None:
        super().__init__()
        if cond_dim < 1 or n_obs_steps < 1:
            raise ValueError(
                "TransformerForDiffusion here conditions on observations: need cond_dim >= 1 and "
                f"n_obs_steps >= 1, got {cond_dim}, {n_obs_steps}"
            )
        if n_emb % n_head:
            raise ValueError(f"n_emb {n_emb} must be divisible by n_head {n_head}")
        self.horizon, self.n_obs_steps, self.cond_dim = horizon, n_obs_steps, cond_dim
        n_cond_tokens = 1 + n_obs_steps  # the step embedding, then one token per observation frame
        self.input_emb = nn.Linear(input_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, horizon, n_emb))
        self.drop = nn.Dropout(p_drop_emb)
        self.time_emb = SinusoidalPosEmb(n_emb)
        self.cond_obs_emb = nn.Linear(cond_dim, n_emb)
        self.cond_pos_emb = nn.Parameter(torch.zeros(1, n_cond_tokens, n_emb))
        if n_cond_layers > 0:
            self.encoder: nn.Module = nn.TransformerEncoder(
                nn.TransformerEncoderLayer(
                    n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu", batch_first=True, norm_first=True
                ),
                num_layers=n_cond_layers,
                enable_nested_tensor=False,
            )
        else:
            self.encoder = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(
                n_emb, n_head, 4 * n_emb, p_drop_attn, activation="gelu", batch_first=True, norm_first=True
            ),
            num_layers=n_layer,
        )
        self.mask: torch.Tensor | None
        self.memory_mask: torch.Tensor | None
        if causal_attn:
            steps = torch.arange(horizon)
            # not persistent: they follow from the sizes (DP stores them; its loader compares, see mask_keys)
            self.register_buffer("mask", _additive_mask(steps[:, None] >= steps[None, :]), persistent=False)
            # memory token s is the step token (s = 0) or frame s - 1: action i sees frames <= i
            self.register_buffer(
                "memory_mask",
                _additive_mask(steps[:, None] >= torch.arange(n_cond_tokens)[None, :] - 1),
                persistent=False,
            )
        else:
            self.mask = None
            self.memory_mask = None
        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, output_dim)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        n = sample.shape[0]
        if cond.ndim == 2:  # the project's flat conditioning -> observation tokens
            cond = cond.reshape(n, self.n_obs_steps, self.cond_dim)
        timesteps = torch.as_tensor(timestep, device=sample.device)
        timesteps = (timesteps[None] if timesteps.ndim == 0 else timesteps).expand(n)
        memory = torch.cat([self.time_emb(timesteps).unsqueeze(1), self.cond_obs_emb(cond)], dim=1)
        memory = self.encoder(self.drop(memory + self.cond_pos_emb[:, : memory.shape[1]]))
        x = self.drop(self.input_emb(sample) + self.pos_emb[:, : sample.shape[1]])
        x = self.decoder(tgt=x, memory=memory, tgt_mask=self.mask, memory_mask=self.memory_mask)
        return self.head(self.ln_f(x))
