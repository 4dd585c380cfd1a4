"""Tests for policy_accel.data: replay buffer, sequence windows, normaliser, PushT datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from helpers.paths import PUSHT_ZARR, needs_shared

from policy_accel.data.datasets import PushTDataset, lowdim_obs
from policy_accel.data.normalizer import FieldNormalizer, Normalizer
from policy_accel.data.replay_buffer import ReplayBuffer, ReplayBufferError
from policy_accel.data.sequence_sampler import SequenceSampler, split_episodes, window_indices

REAL_ZARR = PUSHT_ZARR
EPISODE_ID_SCALE = 1000.0  # action[:, 0] = episode * 1000 + step, so windows reveal their episode


def make_episode(index: int, length: int, rng: np.random.Generator, with_img: bool = False) -> dict[str, np.ndarray]:
    steps = np.arange(length, dtype=np.float32)
    episode = {
        "keypoint": rng.uniform(0, 512, size=(length, 9, 2)).astype(np.float32),
        "state": rng.uniform(0, 512, size=(length, 5)).astype(np.float32),
        "action": np.stack([index * EPISODE_ID_SCALE + steps, rng.uniform(0, 512, length)], -1).astype(np.float32),
    }
    if with_img:
        episode["img"] = rng.uniform(0, 255, size=(length, 96, 96, 3)).astype(np.float32)
    return episode


def make_buffer(
    lengths: tuple[int, ...] = (30, 25, 40, 20, 35, 28), seed: int = 0, with_img: bool = False
) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer()
    for index, length in enumerate(lengths):
        buffer.add_episode(make_episode(index, length, rng, with_img))
    return buffer


def episodes_of(dataset: PushTDataset) -> set[int]:
    """Episode ids seen in a dataset's windows (decoded from the action's first column)."""
    ids: set[int] = set()
    for i in range(len(dataset)):
        ids.update((dataset[i]["action"][:, 0] // EPISODE_ID_SCALE).long().tolist())
    return ids


# --------------------------------------------------------------------- replay buffer
def test_add_and_get_episode() -> None:
    rng = np.random.default_rng(1)
    first, second = make_episode(0, 12, rng), make_episode(1, 7, rng)
    buffer = ReplayBuffer()
    buffer.add_episode(first)
    buffer.add_episode(second)
    assert buffer.n_episodes == 2 and buffer.n_steps == 19
    np.testing.assert_array_equal(buffer.episode_ends, [12, 19])
    np.testing.assert_array_equal(buffer.episode_lengths, [12, 7])
    for index, episode in enumerate((first, second)):
        got = buffer.get_episode(index)
        assert set(got) == set(episode)
        for key in episode:
            np.testing.assert_array_equal(got[key], episode[key])
    np.testing.assert_array_equal(buffer.get_episode(-1)["state"], second["state"])
    # get_episode returns copies: editing them must not corrupt the buffer.
    buffer.get_episode(0)["state"][:] = -1
    np.testing.assert_array_equal(buffer.get_episode(0)["state"], first["state"])
    with pytest.raises(IndexError, match="out of range"):
        buffer.get_episode(2)


def test_zarr_round_trip_in_diffusion_policy_format(tmp_path: Path) -> None:
    buffer = make_buffer()
    path = tmp_path / "buffer.zarr"
    buffer.save_zarr(path, chunk_steps=16)

    assert zarr.open_group(str(path), mode="r").metadata.zarr_format == 2
    assert (path / ".zgroup").is_file()
    meta = json.loads((path / "data" / "state" / ".zarray").read_text())
    assert meta["compressor"]["id"] == "blosc"

    loaded = ReplayBuffer.from_zarr(path)
    assert sorted(loaded.keys()) == sorted(buffer.keys())
    np.testing.assert_array_equal(loaded.episode_ends, buffer.episode_ends)
    assert loaded.episode_ends.dtype == np.int64
    for key in buffer.keys():
        assert loaded[key].dtype == buffer[key].dtype
        np.testing.assert_array_equal(loaded[key], buffer[key])

    subset = ReplayBuffer.from_zarr(path, keys=["state"])
    assert subset.keys() == ["state"]
    with pytest.raises(KeyError, match="nope"):
        ReplayBuffer.from_zarr(path, keys=["state", "nope"])


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "absent.zarr"
    with pytest.raises(FileNotFoundError, match="absent.zarr"):
        ReplayBuffer.from_zarr(missing)


def test_directory_that_is_not_a_zarr_group(tmp_path: Path) -> None:
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(ReplayBufferError):
        ReplayBuffer.from_zarr(tmp_path / "empty.zarr")


def test_group_without_episode_ends(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w", zarr_format=2)
    root.create_array("data/state", shape=(4, 5), dtype="f4")[:] = 0
    with pytest.raises(ReplayBufferError, match="meta/episode_ends"):
        ReplayBuffer.from_zarr(tmp_path / "bad.zarr")


def test_data_of_mismatched_length_names_the_key(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "bad.zarr"), mode="w", zarr_format=2)
    root.create_array("data/state", shape=(10, 5), dtype="f4")[:] = 0
    root.create_array("data/action", shape=(9, 2), dtype="f4")[:] = 0
    root.create_array("meta/episode_ends", shape=(2,), dtype="i8")[:] = [4, 10]
    with pytest.raises(ReplayBufferError, match="data/action"):
        ReplayBuffer.from_zarr(tmp_path / "bad.zarr")
    with pytest.raises(ReplayBufferError, match="data/action"):
        ReplayBuffer({"state": np.zeros((10, 5)), "action": np.zeros((9, 2))}, [4, 10])


def test_episode_ends_must_increase() -> None:
    with pytest.raises(ReplayBufferError, match="increasing"):
        ReplayBuffer({"state": np.zeros((10, 5))}, [6, 4, 10])


def test_add_episode_rejects_inconsistent_episodes() -> None:
    rng = np.random.default_rng(2)
    buffer = make_buffer((5,))
    episode = make_episode(1, 6, rng)
    with pytest.raises(ReplayBufferError, match="keys"):
        buffer.add_episode({k: v for k, v in episode.items() if k != "keypoint"})
    with pytest.raises(ReplayBufferError, match="keys"):
        buffer.add_episode({**episode, "extra": np.zeros(6)})
    with pytest.raises(ReplayBufferError, match="'state'"):
        buffer.add_episode({**episode, "state": np.zeros((6, 4), dtype=np.float32)})
    with pytest.raises(ReplayBufferError, match="equal length"):
        buffer.add_episode({**episode, "action": episode["action"][:5]})
    with pytest.raises(ReplayBufferError, match="empty"):
        buffer.add_episode({k: v[:0] for k, v in episode.items()})
    # None of the rejected episodes may leave a trace.
    assert buffer.n_episodes == 1 and all(len(v) == 5 for v in buffer.data.values())


# ------------------------------------------------------------------ sequence windows
def brute_force_windows(episode: np.ndarray, horizon: int, pad_before: int, pad_after: int) -> list[np.ndarray]:
    """Diffusion Policy's windows written out directly: indices clipped to the episode."""
    length = len(episode)
    return [
        episode[np.clip(np.arange(start, start + horizon), 0, length - 1)]
        for start in range(-pad_before, length - horizon + pad_after + 1)
    ]


def test_padding_repeats_the_edges_like_diffusion_policy() -> None:
    n_obs_steps, n_action_steps, horizon = 2, 3, 4
    buffer = ReplayBuffer({"x": np.arange(10)}, [10])
    sampler = SequenceSampler(buffer, horizon, pad_before=n_obs_steps - 1, pad_after=n_action_steps - 1)
    windows = [sampler.sample_sequence(i)["x"] for i in range(len(sampler))]
    assert len(windows) == 10 - horizon + (n_obs_steps - 1) + (n_action_steps - 1) + 1
    np.testing.assert_array_equal(windows[0], [0, 0, 1, 2])
    np.testing.assert_array_equal(windows[1], [0, 1, 2, 3])
    np.testing.assert_array_equal(windows[-1], [8, 9, 9, 9])
    np.testing.assert_array_equal(windows[-2], [7, 8, 9, 9])


@pytest.mark.parametrize("horizon,pad_before,pad_after", [(4, 1, 2), (16, 1, 7), (5, 0, 0), (3, 2, 2), (6, 3, 0)])
def test_windows_match_brute_force_and_never_cross_episodes(horizon: int, pad_before: int, pad_after: int) -> None:
    lengths = (10, 7, 16, 3)
    episodes = [np.arange(length) + 100 * i for i, length in enumerate(lengths)]
    buffer = ReplayBuffer({"x": np.concatenate(episodes)}, np.cumsum(lengths))
    sampler = SequenceSampler(buffer, horizon, pad_before=pad_before, pad_after=pad_after)
    expected = [w for episode in episodes for w in brute_force_windows(episode, horizon, pad_before, pad_after)]
    got = [sampler.sample_sequence(i)["x"] for i in range(len(sampler))]
    assert len(got) == len(expected)
    assert len(got) == sum(max(0, length - horizon + pad_before + pad_after + 1) for length in lengths)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)


def test_pads_of_a_horizon_or_more_are_clamped() -> None:
    """Like Diffusion Policy: every window still has ``horizon`` steps and some real data."""
    buffer = ReplayBuffer({"x": np.arange(5)}, [5])
    sampler = SequenceSampler(buffer, horizon=4, pad_before=9, pad_after=9)
    windows = [sampler.sample_sequence(i)["x"] for i in range(len(sampler))]
    assert len(windows) == 5 - 4 + 3 + 3 + 1
    assert all(w.shape == (4,) for w in windows)
    np.testing.assert_array_equal(windows[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(windows[-1], [4, 4, 4, 4])


def test_episode_mask_selects_windows() -> None:
    ends = np.array([10, 17, 33])
    all_rows = window_indices(ends, 4, 1, 2)
    masked = window_indices(ends, 4, 1, 2, episode_mask=np.array([False, True, False]))
    assert len(masked) == 7 - 4 + 1 + 2 + 1
    assert np.all((masked[:, 0] >= 10) & (masked[:, 1] <= 17))
    assert len(all_rows) == (10 + 7 + 16) - 3 * (4 - 1 - 2 - 1)


def test_horizon_longer_than_every_episode() -> None:
    buffer = ReplayBuffer({"x": np.arange(12)}, [5, 12])
    with pytest.raises(ValueError, match="horizon 8"):
        SequenceSampler(buffer, horizon=8, pad_before=1, pad_after=7)


def test_split_episodes() -> None:
    first, again = split_episodes(50, 0.2, seed=3), split_episodes(50, 0.2, seed=3)
    np.testing.assert_array_equal(first, again)
    assert first.sum() == 10
    assert any(not np.array_equal(first, split_episodes(50, 0.2, seed=s)) for s in range(4, 8))
    assert split_episodes(10, 0.01, seed=0).sum() == 1  # at least one validation episode
    assert split_episodes(2, 0.9, seed=0).sum() == 1  # never all of them
    assert split_episodes(5, 0.0, seed=0).sum() == 0
    with pytest.raises(ValueError):
        split_episodes(10, 1.0, seed=0)


# ------------------------------------------------------------------------ normaliser
def test_normalizer_maps_min_max_to_unit_range_and_round_trips() -> None:
    rng = np.random.default_rng(4)
    data = rng.uniform(-50, 300, size=(200, 3)).astype(np.float32)
    norm = FieldNormalizer.fit(data)
    x = torch.from_numpy(data)
    y = norm.normalize(x)
    torch.testing.assert_close(y.min(dim=0).values, -torch.ones(3))
    torch.testing.assert_close(y.max(dim=0).values, torch.ones(3))
    torch.testing.assert_close(norm.unnormalize(y), x, atol=1e-4, rtol=1e-5)
    # Works on windows (any leading shape) as well as on flat rows.
    windows = x.reshape(20, 10, 3)
    torch.testing.assert_close(norm.normalize(windows), y.reshape(20, 10, 3))


def test_constant_dimension_maps_to_zero() -> None:
    data = np.stack([np.linspace(0, 1, 50), np.full(50, 7.5)], axis=-1)
    norm = FieldNormalizer.fit(data)
    y = norm.normalize(torch.as_tensor(data, dtype=torch.float32))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 1], torch.zeros(50))
    torch.testing.assert_close(norm.unnormalize(y)[:, 1], torch.full((50,), 7.5))


def test_fit_rejects_nan_and_empty() -> None:
    data = np.ones((10, 2))
    data[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        FieldNormalizer.fit(data, "obs")
    with pytest.raises(ValueError, match="no data"):
        FieldNormalizer.fit(np.zeros((0, 2)))


def test_normalizer_stats_travel_in_state_dict() -> None:
    rng = np.random.default_rng(5)
    fitted = Normalizer.fit({"obs": rng.normal(size=(30, 4)), "action": rng.normal(size=(30, 2))})
    restored = Normalizer.empty_like({"obs": 4, "action": 2})
    restored.load_state_dict(fitted.state_dict())
    x = torch.randn(5, 4)
    torch.testing.assert_close(restored.normalize("obs", x), fitted.normalize("obs", x))
    with pytest.raises(KeyError, match="img"):
        fitted["img"]


# --------------------------------------------------------------------------- datasets
def test_keypoint_dataset_layout() -> None:
    buffer = make_buffer()
    dataset = PushTDataset(
        buffer=buffer, obs_type="keypoints", horizon=16, n_obs_steps=2, n_action_steps=8, val_ratio=0.2, seed=0
    )
    assert dataset.obs_dim == 20 and dataset.action_dim == 2
    obs = lowdim_obs(buffer.data, "keypoints")
    assert obs.shape == (buffer.n_steps, 20) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:, :18], buffer["keypoint"].reshape(-1, 18))
    np.testing.assert_array_equal(obs[:, 18:], buffer["state"][:, :2])

    item = dataset[0]
    assert item["obs"].shape == (16, 20) and item["action"].shape == (16, 2)
    assert item["obs"].dtype == torch.float32
    # The first window of an episode starts one padded (repeated) step before it.
    torch.testing.assert_close(item["obs"][0], item["obs"][1])
    episode = int(item["action"][0, 0] // EPISODE_ID_SCALE)
    start = 0 if episode == 0 else int(buffer.episode_ends[episode - 1])
    torch.testing.assert_close(item["obs"][1:], torch.from_numpy(obs[start : start + 15]))


def test_state_dataset_layout() -> None:
    buffer = make_buffer()
    dataset = PushTDataset(buffer=buffer, obs_type="state", horizon=10, n_obs_steps=2, n_action_steps=8)
    assert dataset.obs_dim == 5
    item = dataset[len(dataset) - 1]
    assert item["obs"].shape == (10, 5)
    # The last window ends with n_action_steps - 1 repeats of the episode's final step.
    torch.testing.assert_close(item["obs"][-8:], item["obs"][-1].expand(8, 5))


def test_image_dataset_layout() -> None:
    buffer = make_buffer((18, 20), with_img=True)
    dataset = PushTDataset(buffer=buffer, obs_type="pixels_agent_pos", horizon=16, n_obs_steps=2, n_action_steps=8)
    item = dataset[3]
    assert item["obs"]["pixels"].shape == (2, 3, 96, 96)
    assert 0.0 <= float(item["obs"]["pixels"].min()) and float(item["obs"]["pixels"].max()) <= 1.0
    assert item["obs"]["agent_pos"].shape == (2, 2)
    assert dataset.obs_dim == 2
    # Values, not just shapes (96 x 96 is square: an H/W transpose keeps the shape): observation step t
    # is buffer step `start + action[t, 0] % 1000`, and its (channel, h, w) pixel is the zarr's (h, w, channel) / 255.
    episode = int(item["action"][0, 0] // EPISODE_ID_SCALE)
    start = 0 if episode == 0 else int(buffer.episode_ends[episode - 1])
    for t in range(2):
        step = start + int(item["action"][t, 0] % EPISODE_ID_SCALE)
        for h, w in [(5, 70), (90, 1), (40, 41)]:
            np.testing.assert_allclose(
                item["obs"]["pixels"][t, :, h, w].numpy(), buffer["img"][step, h, w] / 255.0, rtol=1e-6
            )
        np.testing.assert_allclose(
            item["obs"]["pixels"][t].numpy(), np.moveaxis(buffer["img"][step], -1, 0) / 255.0, rtol=1e-6
        )
        np.testing.assert_array_equal(item["obs"]["agent_pos"][t].numpy(), buffer["state"][step, :2])


def test_train_and_val_splits_are_disjoint_and_cover_all_episodes() -> None:
    buffer = make_buffer()
    train = PushTDataset(buffer=buffer, obs_type="keypoints", val_ratio=0.34, seed=7)
    val = train.validation()
    assert not np.any(train.episode_mask & val.episode_mask)
    assert np.all(train.episode_mask | val.episode_mask)
    train_eps, val_eps = episodes_of(train), episodes_of(val)
    assert train_eps.isdisjoint(val_eps)
    assert train_eps | val_eps == set(range(buffer.n_episodes))
    assert len(val_eps) == 2
    windows_per_episode = buffer.episode_lengths - 16 + 1 + 7 + 1
    assert len(train) + len(val) == windows_per_episode.sum()

    limited = PushTDataset(buffer=buffer, obs_type="keypoints", val_ratio=0.34, seed=7, max_train_episodes=2)
    assert episodes_of(limited) <= train_eps and len(episodes_of(limited)) == 2


def test_dataset_normalizer_covers_the_data() -> None:
    dataset = PushTDataset(buffer=make_buffer(), obs_type="keypoints")
    normalizer = dataset.fit_normalizer()
    obs = torch.stack([dataset[i]["obs"] for i in range(0, len(dataset), 7)])
    y = normalizer.normalize("obs", obs)
    assert float(y.min()) >= -1.0 - 1e-5 and float(y.max()) <= 1.0 + 1e-5


def test_dataset_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="obs_type"):
        PushTDataset(buffer=make_buffer(), obs_type="depth")
    with pytest.raises(ValueError, match="horizon"):
        PushTDataset(buffer=make_buffer(), horizon=4, n_obs_steps=2, n_action_steps=8)
    with pytest.raises(FileNotFoundError, match="absent.zarr"):
        PushTDataset(zarr_path=tmp_path / "absent.zarr")


def test_dataset_from_saved_zarr(tmp_path: Path) -> None:
    buffer = make_buffer()
    buffer.save_zarr(tmp_path / "demo.zarr")
    from_disk = PushTDataset(zarr_path=tmp_path / "demo.zarr", obs_type="keypoints", seed=1)
    in_memory = PushTDataset(buffer=buffer, obs_type="keypoints", seed=1)
    assert len(from_disk) == len(in_memory)
    torch.testing.assert_close(from_disk[5]["obs"], in_memory[5]["obs"])


@needs_shared(REAL_ZARR)
def test_real_pusht_file_loads() -> None:
    buffer = ReplayBuffer.from_zarr(REAL_ZARR, keys=["keypoint", "state", "action"])
    assert buffer.n_episodes == 206 and buffer.n_steps == 25650
    assert buffer["keypoint"].shape == (25650, 9, 2)
    assert buffer["state"].shape == (25650, 5) and buffer["action"].shape == (25650, 2)
    dataset = PushTDataset(buffer=buffer, obs_type="keypoints")
    assert dataset.obs_dim == 20
    assert len(dataset) + len(dataset.validation()) == 25650 - 206 * (16 - 1 - 7 - 1)
