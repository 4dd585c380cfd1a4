"""Fixed-length windows over episodes, with Diffusion Policy's padding semantics.

A training sample is ``horizon`` consecutive steps. Windows may start up to
``pad_before`` steps before an episode and end up to ``pad_after`` steps after it;
the missing steps repeat the episode's first / last step. With
``pad_before = n_obs_steps - 1`` and ``pad_after = n_action_steps - 1`` this lets the
policy learn to act from the very first observation and to predict the tail of an
episode, exactly as Diffusion Policy trains.
"""

from __future__ import annotations

import numpy as np

from policy_accel.data.replay_buffer import ReplayBuffer


def split_episodes(n_episodes: int, val_ratio: float, seed: int) -> np.ndarray:
    """Boolean mask of validation episodes: ``round(n*val_ratio)`` of them (at least one,
    never all) drawn with ``np.random.default_rng(seed)``, as Diffusion Policy splits."""
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f"val_ratio must be in [0, 1), got {val_ratio}")
    mask = np.zeros(n_episodes, dtype=bool)
    if val_ratio == 0.0 or n_episodes < 2:
        return mask
    n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
    rng = np.random.default_rng(seed=seed)
    mask[rng.choice(n_episodes, size=n_val, replace=False)] = True
    return mask


def window_indices(
    episode_ends: np.ndarray, horizon: int, pad_before: int, pad_after: int, episode_mask: np.ndarray | None = None
) -> np.ndarray:
    """All windows of the selected episodes as rows ``[buffer_start, buffer_end,
    window_start, window_end]`` (int64). Pads are clamped to ``horizon - 1``."""
    if horizon < 1 or pad_before < 0 or pad_after < 0:
        raise ValueError(f"need horizon >= 1 and pads >= 0, got {horizon}, {pad_before}, {pad_after}")
    # As Diffusion Policy: a pad of horizon or more would give windows with no real step.
    pad_before, pad_after = min(pad_before, horizon - 1), min(pad_after, horizon - 1)
    if episode_mask is None:
        episode_mask = np.ones(len(episode_ends), dtype=bool)
    rows = []
    start = 0
    for end, selected in zip(episode_ends, episode_mask):
        length = int(end) - start
        if selected:
            for offset in range(-pad_before, length - horizon + pad_after + 1):
                buffer_start = start + max(offset, 0)
                buffer_end = start + min(offset + horizon, length)
                window_start = buffer_start - (start + offset)
                rows.append((buffer_start, buffer_end, window_start, window_start + buffer_end - buffer_start))
        start = int(end)
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


class SequenceSampler:
    """Padded fixed-length windows of chosen keys from a :class:`ReplayBuffer`."""

    def __init__(
        self,
        buffer: ReplayBuffer,
        horizon: int,
        pad_before: int = 0,
        pad_after: int = 0,
        keys: list[str] | None = None,
        episode_mask: np.ndarray | None = None,
    ) -> None:
        lengths = buffer.episode_lengths
        if buffer.n_episodes == 0:
            raise ValueError("replay buffer has no episodes")
        if horizon > lengths.max():
            raise ValueError(f"horizon {horizon} is longer than every episode (longest has {lengths.max()} steps)")
        self.keys = list(keys) if keys is not None else buffer.keys()
        missing = [k for k in self.keys if k not in buffer.data]
        if missing:
            raise KeyError(f"replay buffer has no keys {missing}; available: {buffer.keys()}")
        self.buffer, self.horizon = buffer, horizon
        self.indices = window_indices(buffer.episode_ends, horizon, pad_before, pad_after, episode_mask)
        if len(self.indices) == 0:
            raise ValueError("no window fits the selected episodes; lower the horizon or select more episodes")

    def __len__(self) -> int:
        return len(self.indices)

    def sample_sequence(self, index: int) -> dict[str, np.ndarray]:
        buffer_start, buffer_end, window_start, window_end = self.indices[index]
        out = {}
        for key in self.keys:
            steps = self.buffer.data[key][buffer_start:buffer_end]
            if window_start > 0 or window_end < self.horizon:
                before = np.repeat(steps[:1], window_start, axis=0)
                after = np.repeat(steps[-1:], self.horizon - window_end, axis=0)
                steps = np.concatenate([before, steps, after], axis=0)
            out[key] = steps
        return out
