"""Overlays of multi-label bone masks on an X-ray, shared by the tracking backends, the report and visualize.py.

Masks overlap (neighbouring bones share pixels), so a pixel takes the mean colour of its classes and the border of
every zone covered by two or more bones is drawn in white. Errors: false positives red, false negatives blue,
both (one bone missed where another is wrongly predicted) magenta.
"""
from __future__ import annotations

import matplotlib
import numpy as np
from scipy import ndimage

ALPHA = 0.55
FP_COLOR, FN_COLOR, BOTH_COLOR = (255, 40, 40), (40, 110, 255), (230, 40, 230)
OVERLAP_COLOR = (255, 255, 255)


def class_colors(n: int) -> np.ndarray:
    """(n, 3) float colours in [0, 255]: tab20 then tab20b, so neighbouring class indices differ clearly."""
    table = np.concatenate([matplotlib.colormaps["tab20"].colors, matplotlib.colormaps["tab20b"].colors])
    return np.asarray([table[i % len(table)] for i in range(n)], dtype=np.float32) * 255


def shrink(array: np.ndarray, max_side: int) -> np.ndarray:
    """Nearest-neighbour downscale of the last two axes so the longer one is at most `max_side` (display size)."""
    step = max(1, -(-max(array.shape[-2:]) // max_side))
    return array[..., ::step, ::step]


def gray_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(image, dtype=np.uint8)[..., None], 3, axis=2)


def color_masks(image: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(H, W) uint8 image and (C, H, W) bool masks -> (H, W, 3) uint8, overlap zones outlined."""
    c = masks.shape[0]
    flat = masks.reshape(c, -1).astype(np.float32)
    count = flat.sum(0)
    mean_color = (class_colors(c).T @ flat).T / np.maximum(count, 1)[:, None]  # (3, C) @ (C, N): contiguous
    out = gray_rgb(image).reshape(-1, 3).astype(np.float32)
    covered = count > 0
    out[covered] = (1 - ALPHA) * out[covered] + ALPHA * mean_color[covered]
    out = out.reshape(*image.shape, 3)
    overlap = (count >= 2).reshape(image.shape)
    out[overlap & ~ndimage.binary_erosion(overlap)] = OVERLAP_COLOR
    return out.astype(np.uint8)


def error_map(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """False positives (any bone) red, false negatives blue, both magenta, on the gray image."""
    fp = (pred & ~truth).any(0)
    fn = (truth & ~pred).any(0)
    out = gray_rgb(image)
    out[fp & ~fn] = FP_COLOR
    out[fn & ~fp] = FN_COLOR
    out[fp & fn] = BOTH_COLOR
    return out


def overlay_row(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, max_side: int = 512) -> np.ndarray:
    """image | ground truth | prediction | errors, side by side at display size: (h, 4w + 3 gaps, 3) uint8."""
    image, truth, pred = shrink(image, max_side), shrink(truth, max_side), shrink(pred, max_side)
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    panels = [gray_rgb(image), color_masks(image, truth), color_masks(image, pred), error_map(image, truth, pred)]
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
