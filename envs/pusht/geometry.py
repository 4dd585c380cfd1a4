"""Static PushT geometry and pure pose -> geometry helpers.

Everything here is plain numpy/shapely so that evaluation code can score a
recorded state (coverage, keypoints) without building a physics world.
Coordinates are pymunk world units, which are also 512x512 image pixels
(x right, y down; no flip).
"""

from __future__ import annotations

import math

import numpy as np
from shapely.geometry import MultiPolygon, Polygon

WINDOW_SIZE: int = 512

# Boundary walls: static segments (endpoints, radius 2) on the static body.
WALL_RADIUS: float = 2.0
WALLS: tuple[tuple[tuple[float, float], tuple[float, float]], ...] = (
    ((5.0, 506.0), (5.0, 5.0)),
    ((5.0, 5.0), (506.0, 5.0)),
    ((506.0, 5.0), (506.0, 506.0)),
    ((5.0, 506.0), (506.0, 506.0)),
)

AGENT_RADIUS: float = 15.0
AGENT_START: tuple[float, float] = (256.0, 400.0)

# The T block in its body frame: a 120x30 bar and a 30x90 stem below it.
BLOCK_MASS: float = 1.0
TEE_BAR: tuple[tuple[float, float], ...] = ((-60.0, 30.0), (60.0, 30.0), (60.0, 0.0), (-60.0, 0.0))
TEE_STEM: tuple[tuple[float, float], ...] = ((-15.0, 30.0), (-15.0, 120.0), (15.0, 120.0), (15.0, 30.0))
TEE_POLYS: tuple[tuple[tuple[float, float], ...], ...] = (TEE_BAR, TEE_STEM)
BLOCK_START: tuple[float, float, float] = (256.0, 300.0, 0.0)

GOAL_POSE: np.ndarray = np.array([256.0, 256.0, math.pi / 4])
GOAL_POSE.flags.writeable = False

# 9 block keypoints in the block's body frame, in the order of the dataset's
# `data/keypoint` array. Obtained by fitting `data/keypoint` against
# `data/state` of the demonstration file pusht_cchi_v7_replay.zarr (median
# over all frames; per-point std about 0.03 px).
KEYPOINTS_LOCAL: np.ndarray = np.array(
    [
        [9.269787, 90.04097],
        [-60.983471, -1.186729],
        [60.912758, -1.393364],
        [-0.270504, 25.543625],
        [-14.064926, 122.815857],
        [39.002739, 32.857403],
        [-39.966415, 32.729656],
        [-16.824345, 62.863178],
        [23.541462, -1.700288],
    ]
)
KEYPOINTS_LOCAL.flags.writeable = False


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def local_to_world(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map body-frame points (N,2) to world for a body-origin pose (x, y, angle).

    Same transform as pymunk's `Body.local_to_world`: origin + R(angle) @ p.
    """
    pose = np.asarray(pose, dtype=np.float64)
    return pose[:2] + np.asarray(points, dtype=np.float64) @ _rotation(float(pose[2])).T


def block_polygons(pose: np.ndarray) -> list[np.ndarray]:
    """World vertices (4,2) of the bar and the stem for a block pose."""
    return [local_to_world(pose, np.array(poly)) for poly in TEE_POLYS]


def block_keypoints(pose: np.ndarray) -> np.ndarray:
    """The 9 dataset keypoints (9,2) in world coordinates for a block pose."""
    return local_to_world(pose, KEYPOINTS_LOCAL)


def block_shape(pose: np.ndarray) -> MultiPolygon:
    """Shapely geometry of the T at a pose (used for goal coverage)."""
    return MultiPolygon([Polygon(v) for v in block_polygons(pose)])


def coverage(block_pose: np.ndarray, goal_pose: np.ndarray = GOAL_POSE) -> float:
    """Fraction of the goal T's area covered by the block T, in [0, 1].

    The goal body's centre of gravity is its origin, so the goal pose is a plain
    body-origin pose like the block's.
    """
    goal = block_shape(goal_pose)
    return float(goal.intersection(block_shape(block_pose)).area / goal.area)
