"""Per-dimension min/max normalisation to [-1, 1], saved inside the model's state_dict.

Diffusion Policy's PushT models see observations and actions scaled by the min/max of
the training data ("limits" mode); the stats travel with the weights so a checkpoint
is self-contained.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

RANGE_EPS = 1e-4  # dimensions narrower than this are constant: map them to 0


class FieldNormalizer(nn.Module):
    """Affine map of one field (e.g. ``obs`` or ``action``) to [-1, 1] per last-axis dim."""

    def __init__(self, minimum: torch.Tensor, maximum: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("min", torch.as_tensor(minimum, dtype=torch.float32).clone())
        self.register_buffer("max", torch.as_tensor(maximum, dtype=torch.float32).clone())

    @classmethod
    def fit(cls, values: np.ndarray | torch.Tensor, name: str = "field") -> FieldNormalizer:
        flat = torch.as_tensor(np.asarray(values), dtype=torch.float32)
        flat = flat.reshape(-1, flat.shape[-1])
        if flat.shape[0] == 0:
            raise ValueError(f"cannot fit normaliser for '{name}' on no data")
        if not torch.isfinite(flat).all():
            raise ValueError(f"cannot fit normaliser for '{name}': data contains NaN or inf")
        return cls(flat.min(dim=0).values, flat.max(dim=0).values)

    def _scale_offset(self) -> tuple[torch.Tensor, torch.Tensor]:
        span = self.max - self.min
        constant = span < RANGE_EPS
        scale = torch.where(constant, torch.ones_like(span), 2.0 / span.clamp_min(RANGE_EPS))
        offset = torch.where(constant, -self.min, -1.0 - self.min * scale)
        return scale, offset

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._scale_offset()
        return x * scale.to(x) + offset.to(x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        scale, offset = self._scale_offset()
        return (x - offset.to(x)) / scale.to(x)

    @property
    def dim(self) -> int:
        return int(self.min.shape[-1])


class AffineFieldNormalizer(nn.Module):
    """``x * scale + offset`` with stored ``scale``/``offset`` (Diffusion Policy's LinearNormalizer params).

    The parameters broadcast over the trailing axes: shape (D,) per last-axis dim, (1,) for one
    range on every pixel, (C, 1, 1) per image channel (mean/std normalisation)."""

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor) -> None:
        super().__init__()
        scale = torch.as_tensor(scale, dtype=torch.float32).clone()
        offset = torch.as_tensor(offset, dtype=torch.float32).clone()
        if scale.shape != offset.shape:
            raise ValueError(f"normaliser scale {tuple(scale.shape)} and offset {tuple(offset.shape)} differ in shape")
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.to(x) + self.offset.to(x)

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.offset.to(x)) / self.scale.to(x)

    @property
    def dim(self) -> int:
        return int(self.scale.shape[-1])


class Normalizer(nn.Module):
    """A named set of :class:`FieldNormalizer` (keys ``fields.<name>.min/max`` in state_dict)."""

    def __init__(self, fields: Mapping[str, FieldNormalizer] | None = None) -> None:
        super().__init__()
        self.fields = nn.ModuleDict(dict(fields or {}))

    @classmethod
    def fit(cls, data: Mapping[str, np.ndarray]) -> Normalizer:
        return cls({name: FieldNormalizer.fit(values, name) for name, values in data.items()})

    @classmethod
    def empty_like(cls, dims: Mapping[str, int]) -> Normalizer:
        """Placeholder with the right shapes, to be filled by ``load_state_dict``."""
        return cls({name: FieldNormalizer(torch.full((d,), -1.0), torch.ones(d)) for name, d in dims.items()})

    @classmethod
    def empty_from_spec(cls, spec: Mapping[str, Mapping]) -> Normalizer:
        """Placeholder from a config spec ``{field: {"kind": "limits"|"affine", "shape": [...]}}``."""
        fields: dict[str, nn.Module] = {}
        for name, entry in spec.items():
            kind, shape = entry.get("kind"), tuple(int(d) for d in entry.get("shape", ()))
            if kind == "limits" and len(shape) == 1:
                fields[name] = FieldNormalizer(torch.full(shape, -1.0), torch.ones(shape))
            elif kind == "affine" and shape:
                fields[name] = AffineFieldNormalizer(torch.ones(shape), torch.zeros(shape))
            else:
                raise ValueError(
                    f"normaliser field '{name}': unsupported spec {dict(entry)} "
                    "(kind 'limits' with shape [D], or 'affine' with a shape)"
                )
        return cls(fields)

    def spec(self) -> dict[str, dict]:
        """The config spec :meth:`empty_from_spec` rebuilds this normaliser's layout from."""
        out = {}
        for name, field_ in self.fields.items():
            if isinstance(field_, AffineFieldNormalizer):
                out[name] = {"kind": "affine", "shape": list(field_.scale.shape)}
            else:
                out[name] = {"kind": "limits", "shape": [field_.dim]}
        return out

    def __getitem__(self, name: str) -> FieldNormalizer:
        if name not in self.fields:
            raise KeyError(f"normaliser has no field '{name}'; fields: {list(self.fields)}")
        return self.fields[name]

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self[name].normalize(x)

    def unnormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self[name].unnormalize(x)
