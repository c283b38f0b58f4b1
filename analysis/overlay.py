"""Overlays of multi-label bone masks on an X-ray, shared by the tracking backends, the report and visualize.py.

Masks overlap (neighbouring bones share pixels), so a pixel takes the mean colour of its classes and the border of
every zone covered by two or more bones is drawn in white. Errors: false positives red, false negatives blue,
both (one bone missed where another is wrongly predicted) magenta; given the class names, the errors panel names the
bones with the most wrong pixels where their errors are.
"""
from __future__ import annotations

import cv2
import matplotlib
import numpy as np
from scipy import ndimage

ALPHA = 0.55
FP_COLOR, FN_COLOR, BOTH_COLOR = (255, 40, 40), (40, 110, 255), (230, 40, 230)
OVERLAP_COLOR = (255, 255, 255)
NAMED_ERRORS = 5  # bones named on an errors panel: those with the most wrong pixels


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


def worst_errors(truth: np.ndarray, pred: np.ndarray, k: int = NAMED_ERRORS) -> list[tuple[int, int, int]]:
    """(class, row, column) for the `k` classes with the most wrong pixels (truth XOR prediction), most first; the
    point is the wrong pixel of that class nearest to the centre of its wrong pixels, so a label sits on them."""
    wrong = truth != pred
    counts = wrong.reshape(len(wrong), -1).sum(1)
    out = []
    for c in np.argsort(-counts, kind="stable")[:k]:
        if counts[c] == 0:
            break
        rows, cols = np.nonzero(wrong[c])
        i = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        out.append((int(c), int(rows[i]), int(cols[i])))
    return out


def name_errors(panel: np.ndarray, truth: np.ndarray, pred: np.ndarray, classes: list[str]) -> np.ndarray:
    """Write the names of the bones with the most wrong pixels on the errors panel, each beside a dot on its errors
    (moved down where it would cover an earlier name), white on a dark outline so it reads on any colour."""
    scale = max(0.35, panel.shape[0] / 1100)
    font, placed = cv2.FONT_HERSHEY_SIMPLEX, []
    for c, row, col in worst_errors(truth, pred):
        (width, height), _ = cv2.getTextSize(classes[c], font, scale, 1)
        x = int(np.clip(col + 5, 0, max(0, panel.shape[1] - width - 2)))
        y = int(np.clip(row + height // 2, height + 2, panel.shape[0] - 3))
        while any(x < px + pw and px < x + width and y - height < py and py - ph < y for px, py, pw, ph in placed):
            y += height + 4  # below the name it would cover
        placed.append((x, y, width, height))
        cv2.circle(panel, (col, row), 3, (0, 0, 0), -1)
        cv2.circle(panel, (col, row), 2, (255, 255, 0), -1)
        for color, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(panel, classes[c], (x, y), font, scale, color, thickness, cv2.LINE_AA)
    return panel


def overlay_row(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, max_side: int = 512,
                classes: list[str] | None = None) -> np.ndarray:
    """image | ground truth | prediction | errors, side by side at display size: (h, 4w + 3 gaps, 3) uint8; with
    `classes`, the errors panel names the bones with the most wrong pixels."""
    image, truth, pred = shrink(image, max_side), shrink(truth, max_side), shrink(pred, max_side)
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    errors = error_map(image, truth, pred)
    if classes is not None:
        errors = name_errors(errors, truth, pred, classes)
    panels = [gray_rgb(image), color_masks(image, truth), color_masks(image, pred), errors]
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
