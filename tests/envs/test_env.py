"""Tests for the PushT simulator (envs.pusht)."""

from __future__ import annotations

import importlib
import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from helpers.paths import PUSHT_ZARR, needs_shared
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon

import policy_accel.envs as envs
from policy_accel.envs.pusht import OBS_TYPES, PushTEnv, sample_initial_state

ENV_ID = "policy_accel/PushT-v0"
GOAL = np.array([256.0, 256.0, math.pi / 4])
BAR = [(-60, 30), (60, 30), (60, 0), (-60, 0)]
STEM = [(-15, 30), (-15, 120), (15, 120), (15, 30)]
ZARR = PUSHT_ZARR
FAR_AGENT = (30.0, 480.0)  # a corner the block never reaches in these tests


def tee(pose: np.ndarray) -> MultiPolygon:
    """Independent shapely T at a body-origin pose (rotate about origin, then shift)."""
    polys = [
        affinity.translate(affinity.rotate(Polygon(p), pose[2], origin=(0, 0), use_radians=True), pose[0], pose[1])
        for p in (BAR, STEM)
    ]
    return MultiPolygon(polys)


def state_with_block(x: float, y: float, angle: float) -> np.ndarray:
    return np.array([*FAR_AGENT, x, y, angle])


# ---------------------------------------------------------------- reset
def test_reset_same_seed_same_obs_different_seeds_differ() -> None:
    env = PushTEnv()
    a, _ = env.reset(seed=7)
    b, _ = env.reset(seed=7)
    c, _ = env.reset(seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_unseeded_reset_follows_previous_seed() -> None:
    env1, env2 = PushTEnv(), PushTEnv()
    env1.reset(seed=3)
    env2.reset(seed=3)
    np.testing.assert_array_equal(env1.reset()[0], env2.reset()[0])


def test_legacy_reset_rotates_block_about_centre_of_gravity() -> None:
    seed = 100000
    rs = np.random.RandomState(seed)
    drawn = [rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400)]
    angle = rs.randn() * 2 * np.pi - np.pi
    # Centre of gravity (body frame): mean of the two rectangles' centroids.
    cog = np.mean([Polygon(BAR).centroid.coords[0], Polygon(STEM).centroid.coords[0]], axis=0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    expected_origin = np.array(drawn[2:4], float) + cog - rot @ cog

    env = PushTEnv()
    env.reset(seed=seed)
    state = env.state
    np.testing.assert_allclose(state[:2], drawn[:2], atol=1e-9)
    np.testing.assert_allclose(state[2:4], expected_origin, atol=1e-6)
    assert state[4] == pytest.approx(angle, abs=1e-9)
    assert np.linalg.norm(expected_origin - drawn[2:4]) > 1.0  # the legacy shift is real here


def test_reset_distribution() -> None:
    env = PushTEnv()
    states = np.array([env.reset(seed=s)[0] for s in range(200)])
    agent, block, angle = states[:, :2], states[:, 2:4], states[:, 4]
    assert np.all((agent >= 50) & (agent < 450))
    # Block origin = drawn position in [100, 400) shifted by at most 2*|cog| = 90 px.
    assert np.all((block >= 100 - 90) & (block < 400 + 90))
    assert np.all((angle >= 0) & (angle < 2 * math.pi))
    counts, _ = np.histogram(angle, bins=4, range=(0, 2 * math.pi))
    assert np.all(counts > 20)
    assert len(np.unique(agent, axis=0)) > 190


# ---------------------------------------------------------------- reward
def test_block_on_goal_is_success() -> None:
    env = PushTEnv()
    _, info = env.reset(options={"state": state_with_block(*GOAL)})
    assert info["coverage"] == pytest.approx(1.0, abs=1e-9)
    _, reward, terminated, truncated, info = env.step(np.array(FAR_AGENT))
    assert info["coverage"] == pytest.approx(1.0, abs=1e-9)
    assert reward == 1.0 and terminated and not truncated and info["is_success"]


def test_block_far_from_goal_scores_zero() -> None:
    env = PushTEnv()
    env.reset(options={"state": state_with_block(80.0, 100.0, 0.0)})
    _, reward, terminated, _, info = env.step(np.array(FAR_AGENT))
    assert info["coverage"] == 0.0 and reward == 0.0 and not terminated


def test_partial_coverage_matches_shapely() -> None:
    pose = GOAL + np.array([30.0, -10.0, 0.2])
    expected = tee(GOAL).intersection(tee(pose)).area / tee(GOAL).area
    assert 0.2 < expected < 0.9
    env = PushTEnv()
    env.reset(options={"state": state_with_block(*pose)})
    _, reward, terminated, _, info = env.step(np.array(FAR_AGENT))
    assert info["coverage"] == pytest.approx(expected, rel=1e-9)
    assert reward == pytest.approx(expected / 0.95, rel=1e-9) and not terminated


# ---------------------------------------------------------------- state restore
def test_restore_state_is_exact_and_order_matters() -> None:
    state = np.array([100.0, 120.0, 300.0, 250.0, 2.0])
    env = PushTEnv()
    obs = env.restore_state(state)
    np.testing.assert_allclose(env.state, state, atol=1e-9)
    np.testing.assert_allclose(obs, state, atol=1e-9)  # angle 2.0 is already in [0, 2pi)
    body = env._world.block
    assert body.angle == 2.0
    np.testing.assert_allclose(tuple(body.position), state[2:4], atol=1e-9)

    # Position first, then angle: the rotation about the CoG moves the origin.
    body.angle = 0.0
    body.position = tuple(state[2:4])
    body.angle = state[4]
    assert np.linalg.norm(np.array(body.position) - state[2:4]) > 10.0


def test_seeded_reset_order_flag() -> None:
    seed = 11
    drawn = sample_initial_state(seed)
    exact = PushTEnv(legacy_reset=False)
    exact.reset(seed=seed)
    np.testing.assert_allclose(exact.state[2:5], drawn[2:5], atol=1e-9)
    legacy = PushTEnv()
    legacy.reset(seed=seed)
    assert np.linalg.norm(legacy.state[2:4] - drawn[2:4]) > 1.0


@needs_shared(ZARR)
def test_keypoints_match_dataset() -> None:
    import zarr

    root = zarr.open(str(ZARR), mode="r")
    states, keypoints = root["data/state"], root["data/keypoint"]
    env = PushTEnv(obs_type="keypoints")
    for i in np.linspace(0, states.shape[0] - 1, 6).astype(int):
        state = np.asarray(states[i], dtype=np.float64)
        obs, _ = env.reset(options={"state": state})
        np.testing.assert_allclose(obs[:18], np.asarray(keypoints[i], np.float64).ravel(), atol=0.05)
        np.testing.assert_allclose(obs[18:], state[:2], atol=1e-9)


# ---------------------------------------------------------------- gymnasium API
@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_check_env(obs_type: str) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
        check_env(gym.make(ENV_ID, obs_type=obs_type, render_mode="rgb_array").unwrapped)


@pytest.mark.parametrize("obs_type", OBS_TYPES)
def test_make_and_step(obs_type: str) -> None:
    env = gym.make(ENV_ID, obs_type=obs_type)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and isinstance(terminated, bool) and truncated is False
    expected = {"coverage", "is_success", "n_contacts", "state", "pos_agent", "vel_agent", "block_pose", "goal_pose"}
    assert expected <= set(info)
    assert isinstance(info["n_contacts"], int) and info["state"].shape == (5,)
    env.close()
    env.close()


def test_time_limit_truncates_at_300() -> None:
    env = gym.make(ENV_ID)
    env.reset(seed=0)
    target = np.array(FAR_AGENT)
    for _ in range(299):
        assert not env.step(target)[3]
    assert env.step(target)[3]


def test_registration_is_idempotent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(envs)
    assert gym.spec(ENV_ID).max_episode_steps == 300


def test_sync_vector_env() -> None:
    vec = gym.vector.SyncVectorEnv([lambda: gym.make(ENV_ID, obs_type="keypoints") for _ in range(3)])
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 20)
    obs, reward, *_ = vec.step(vec.action_space.sample())
    assert obs.shape == (3, 20) and reward.shape == (3,)
    vec.close()


def test_async_vector_env() -> None:
    vec = gym.vector.AsyncVectorEnv([lambda: gym.make(ENV_ID, obs_type="state") for _ in range(2)])
    try:
        obs, _ = vec.reset(seed=[1, 2])
        assert obs.shape == (2, 5) and not np.allclose(obs[0], obs[1])
        obs, *_ = vec.step(vec.action_space.sample())
        assert obs.shape == (2, 5)
    finally:
        vec.close()


# ---------------------------------------------------------------- rendering
@pytest.mark.parametrize("size", [96, 128])
def test_render_rgb_array(size: int) -> None:
    env = PushTEnv(render_mode="rgb_array", render_size=size)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (size, size, 3) and frame.dtype == np.uint8
    green = np.all(frame == (144, 238, 144), axis=-1)
    assert green.sum() > 20
    assert frame.std() > 10


def test_pixel_observations() -> None:
    env = PushTEnv(obs_type="pixels_agent_pos", obs_size=64)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    np.testing.assert_allclose(obs["agent_pos"], env.state[:2])


def test_render_without_mode_returns_none() -> None:
    env = PushTEnv()
    env.reset(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert env.render() is None


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("action", [np.zeros(3), np.zeros((1, 2)), np.array([np.nan, 1.0]), [np.inf, 0.0], "ab"])
def test_bad_action_raises(action: object) -> None:
    env = PushTEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(action)


def test_bad_obs_type_and_state_raise() -> None:
    with pytest.raises(ValueError, match="pixels_agent_pos"):
        PushTEnv(obs_type="image")
    env = PushTEnv()
    with pytest.raises(ValueError):
        env.reset(options={"state": np.zeros(4)})
    with pytest.raises(ValueError):
        env.reset(options={"stat": np.zeros(5)})
