"""Headless Pillow renderer for PushT.

Reproduces the look of Diffusion Policy's pygame renderer without a display:
draw at 512x512 in world pixels (no y flip), then downscale. Pixel extents
and the resize were tuned against the dataset's 96x96 frames rendered from
their recorded states (mean absolute error about 0.13 of 255 per channel), so
image policies trained on the demonstrations see the same picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from policy_accel.envs.pusht import geometry as geo

Color = tuple[int, int, int]

WHITE: Color = (255, 255, 255)
LIGHT_GREEN: Color = (144, 238, 144)
LIGHT_SLATE_GRAY: Color = (119, 136, 153)
ROYAL_BLUE: Color = (65, 105, 225)
LIGHT_GRAY: Color = (211, 211, 211)
OUTLINE_RADIUS: int = 2
AGENT_INNER_RADIUS: float = geo.AGENT_RADIUS - 4


def lighten(color: Color, factor: float = 1.2) -> Color:
    """Brighten a colour the way the original renderer fills shapes (x1.2, clipped)."""
    return tuple(int(min(255.0, factor * c)) for c in color)  # type: ignore[return-value]


def _pixel(p: np.ndarray) -> tuple[int, int]:
    # pygame draws at integer pixels; round like its coordinate conversion.
    return round(float(p[0])), round(float(p[1]))


def _disc(draw: ImageDraw.ImageDraw, center: tuple[float, float], radius: float, color: Color) -> None:
    # pygame's filled circle of radius r spans [c - r, c + r - 1] in pixels.
    x, y = center
    draw.ellipse((x - radius, y - radius, x + radius - 1, y + radius - 1), fill=color)


def _fat_segment(draw: ImageDraw.ImageDraw, a: tuple[int, int], b: tuple[int, int], radius: int, color: Color) -> None:
    """A line with round caps (pymunk's 'fat segment').

    Width 2*radius + 1 reproduces the 5-px walls/outlines of the dataset frames.
    """
    draw.line((a, b), fill=color, width=2 * radius + 1)
    _disc(draw, a, radius, color)
    _disc(draw, b, radius, color)


def draw_scene(agent_pos: np.ndarray, block_pose: np.ndarray, goal_pose: np.ndarray = geo.GOAL_POSE) -> Image.Image:
    """Full-resolution (512x512) RGB frame of the scene."""
    img = Image.new("RGB", (geo.WINDOW_SIZE, geo.WINDOW_SIZE), WHITE)
    draw = ImageDraw.Draw(img)
    for poly in geo.block_polygons(goal_pose):
        draw.polygon([_pixel(v) for v in poly], fill=LIGHT_GREEN)
    for poly in geo.block_polygons(block_pose):
        pts = [_pixel(v) for v in poly]
        draw.polygon(pts, fill=lighten(LIGHT_SLATE_GRAY))
        for i in range(len(pts)):
            _fat_segment(draw, pts[i], pts[(i + 1) % len(pts)], OUTLINE_RADIUS, LIGHT_SLATE_GRAY)
    center = _pixel(np.asarray(agent_pos))
    _disc(draw, center, geo.AGENT_RADIUS, ROYAL_BLUE)
    _disc(draw, center, AGENT_INNER_RADIUS, lighten(ROYAL_BLUE))
    for a, b in geo.WALLS:
        _fat_segment(draw, _pixel(np.array(a)), _pixel(np.array(b)), int(geo.WALL_RADIUS), LIGHT_GRAY)
    return img


def resize_linear(img: np.ndarray, size: int) -> np.ndarray:
    """Plain bilinear resize of a square HxWxC uint8 image, without antialiasing.

    Mimics OpenCV's INTER_LINEAR (half-pixel centres, 2x2 taps), which produced
    the dataset's 96x96 frames; Pillow's antialiased filters blur thin walls
    and outlines differently (about 6x larger mean pixel error vs the dataset).
    """
    n = img.shape[0]
    src = np.clip((np.arange(size) + 0.5) * (n / size) - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0)[:, None, None]
    a = img.astype(np.float32)
    rows = a[i0] * (1 - w) + a[i1] * w
    w = w.reshape(1, size, 1)
    out = rows[:, i0] * (1 - w) + rows[:, i1] * w
    return np.rint(out).astype(np.uint8)


def render_frame(
    agent_pos: np.ndarray, block_pose: np.ndarray, size: int, goal_pose: np.ndarray = geo.GOAL_POSE
) -> np.ndarray:
    """(size, size, 3) uint8 frame: draw at 512x512, then downscale."""
    img = np.asarray(draw_scene(agent_pos, block_pose, goal_pose), dtype=np.uint8)
    return img if size == geo.WINDOW_SIZE else resize_linear(img, size)
