"""Episodic replay buffer in Diffusion Policy's zarr layout.

Layout (identical to Diffusion Policy's ``ReplayBuffer`` so its files load unchanged)::

    data/<key>          arrays concatenated over time, first axis = step
    meta/episode_ends   int64, exclusive end index of each episode

The buffer keeps its arrays in memory as numpy: the PushT low-dimensional data is a
few MB, and random access during training must not touch the disk. Large keys (the
2.8 GB ``img`` array) are only read when asked for by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numcodecs
import numpy as np
import zarr

PUSHT_PUBLIC_FILE_HINT = (
    "The PushT demonstrations are Diffusion Policy's public file "
    "'pusht_cchi_v7_replay.zarr.zip' from the Diffusion Policy project site "
    "(diffusion-policy.cs.columbia.edu/data/training/pusht.zip); unzip it and pass the "
    "path of 'pusht_cchi_v7_replay.zarr'."
)


class ReplayBufferError(ValueError):
    """A replay buffer on disk or in memory is malformed."""


class ReplayBuffer:
    """In-memory episodic buffer that reads and writes Diffusion Policy's zarr layout."""

    def __init__(self, data: Mapping[str, np.ndarray] | None = None, episode_ends: Iterable[int] | None = None) -> None:
        self.data: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in (data or {}).items()}
        self.episode_ends = np.asarray(list(episode_ends) if episode_ends is not None else [], dtype=np.int64)
        self._validate(source="in-memory buffer")

    # ------------------------------------------------------------------ io
    @classmethod
    def from_zarr(cls, path: str | Path, keys: Iterable[str] | None = None) -> ReplayBuffer:
        """Load ``keys`` (default: every ``data/`` array) of a zarr replay buffer into memory."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"replay buffer not found: '{path}'. {PUSHT_PUBLIC_FILE_HINT}")
        try:
            root = zarr.open_group(str(path), mode="r")
        except Exception as exc:  # zarr raises several types for a non-group path
            raise ReplayBufferError(f"'{path}' is not a readable zarr group: {exc}") from exc
        if "meta" not in root or "episode_ends" not in root["meta"]:
            raise ReplayBufferError(f"'{path}' has no 'meta/episode_ends' array: not a Diffusion Policy replay buffer")
        if "data" not in root:
            raise ReplayBufferError(f"'{path}' has no 'data' group: not a Diffusion Policy replay buffer")
        available = sorted(root["data"].keys())
        wanted = list(keys) if keys is not None else available
        missing = [k for k in wanted if k not in available]
        if missing:
            raise KeyError(f"'{path}' has no data arrays {missing}; available: {available}")
        data = {k: root["data"][k][:] for k in wanted}
        episode_ends = root["meta"]["episode_ends"][:]
        buffer = cls.__new__(cls)
        buffer.data, buffer.episode_ends = data, np.asarray(episode_ends, dtype=np.int64)
        buffer._validate(source=str(path))
        return buffer

    def save_zarr(self, path: str | Path, chunk_steps: int = 1024) -> None:
        """Write the buffer as a zarr v2 group with blosc/zstd, as Diffusion Policy does."""
        root = zarr.open_group(str(path), mode="w", zarr_format=2)
        compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
        for key, value in self.data.items():
            chunks = (min(chunk_steps, max(len(value), 1)),) + value.shape[1:]
            array = root.create_array(
                f"data/{key}", shape=value.shape, chunks=chunks, dtype=value.dtype, compressors=compressor
            )
            array[:] = value
        ends = root.create_array(
            "meta/episode_ends",
            shape=self.episode_ends.shape,
            chunks=(max(len(self.episode_ends), 1),),
            dtype=np.int64,
            compressors=compressor,
        )
        ends[:] = self.episode_ends

    # ------------------------------------------------------------- episodes
    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if len(self.episode_ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self.episode_ends]))

    def keys(self) -> list[str]:
        return list(self.data.keys())

    def __getitem__(self, key: str) -> np.ndarray:
        return self.data[key]

    def episode_slice(self, index: int) -> slice:
        if not -self.n_episodes <= index < self.n_episodes:
            raise IndexError(f"episode {index} out of range: buffer has {self.n_episodes} episodes")
        index %= self.n_episodes
        start = 0 if index == 0 else int(self.episode_ends[index - 1])
        return slice(start, int(self.episode_ends[index]))

    def get_episode(self, index: int) -> dict[str, np.ndarray]:
        """Return a copy of every array of one episode."""
        sl = self.episode_slice(index)
        return {k: v[sl].copy() for k, v in self.data.items()}

    def add_episode(self, episode: Mapping[str, np.ndarray]) -> None:
        """Append one episode; its keys must match the buffer's (any keys if empty)."""
        episode = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {k: len(v) for k, v in episode.items()}
        if not episode or len(set(lengths.values())) != 1:
            raise ReplayBufferError(f"episode arrays must be non-empty and of equal length, got {lengths}")
        length = next(iter(lengths.values()))
        if length == 0:
            raise ReplayBufferError("cannot add an empty episode")
        if self.data and set(episode) != set(self.data):
            raise ReplayBufferError(f"episode keys {sorted(episode)} differ from buffer keys {sorted(self.data)}")
        # Check every key before touching any, so a rejected episode leaves the buffer intact.
        for key, value in episode.items():
            if key in self.data and value.shape[1:] != self.data[key].shape[1:]:
                raise ReplayBufferError(
                    f"'{key}' has per-step shape {value.shape[1:]}, buffer has {self.data[key].shape[1:]}"
                )
        for key, value in episode.items():
            if key in self.data:
                self.data[key] = np.concatenate([self.data[key], value.astype(self.data[key].dtype)])
            else:
                self.data[key] = value.copy()
        self.episode_ends = np.append(self.episode_ends, self.n_steps + length).astype(np.int64)

    # ----------------------------------------------------------- validation
    def _validate(self, source: str) -> None:
        ends = self.episode_ends
        if ends.ndim != 1:
            raise ReplayBufferError(f"{source}: meta/episode_ends must be 1-D, got shape {ends.shape}")
        if len(ends) and (ends[0] <= 0 or np.any(np.diff(ends) <= 0)):
            raise ReplayBufferError(f"{source}: meta/episode_ends must be strictly increasing and positive")
        total = int(ends[-1]) if len(ends) else 0
        for key, value in self.data.items():
            if len(value) != total:
                raise ReplayBufferError(
                    f"{source}: data/{key} has {len(value)} steps but meta/episode_ends says {total}"
                )
