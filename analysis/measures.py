"""Error measures of multi-label masks, accumulated image by image so memory stays flat over a fold.

Confusion between bones, in multi-label terms: C[a, b] = (pixels of bone a's truth that are predicted as b and not
as a) / (pixels of bone a's truth), summed over images before dividing. The diagonal is zero by construction; a row
sums to more than a's miss rate when a missed pixel goes to several bones.

Boundary error per class: the wrong pixels (truth XOR prediction) within `near` pixels of the true boundary, as a
share of all wrong pixels; and the symmetric surface distance (each boundary pixel of one mask to the nearest
boundary pixel of the other), its mean and 95th percentile. Distances are exact Euclidean (scipy's k-d tree
between the two boundaries' pixels), on each bone's bounding box only (a bone covers a few percent of a 2048 px
image).

The report computes both from per-class predicted boxes (modes.fullsize.FullSizeProbs.masks) and the packed
truth (`*_boxes` below), so its cost follows the bones; the full-mask functions are the reference definitions.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

from modes.fullsize import packed_box, unpack_box

BOUNDARY_NEAR = 2.0  # pixels: a wrong pixel this close to the true boundary counts as a boundary error
DIST_BIN = 0.5  # surface distances are histogrammed, rounded to half a pixel, up to DIST_MAX (last bin: the rest)
DIST_MAX = 256.0
_REACH = int(BOUNDARY_NEAR)
NEAR_DISK = (np.add.outer(np.arange(-_REACH, _REACH + 1) ** 2, np.arange(-_REACH, _REACH + 1) ** 2)
             <= BOUNDARY_NEAR ** 2).astype(np.uint8)
CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
PIXEL_CHUNK = 1 << 20  # confusion is computed over this many pixels at a time (bounded memory at 2048 px)


def confusion_counts(truth: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """(C, H, W) bool truth and prediction -> (C, C) float64 counts: [a, b] = |T_a & P_b & ~P_a|."""
    c = truth.shape[0]
    t, p = truth.reshape(c, -1), pred.reshape(c, -1)
    out = torch.zeros(c, c, dtype=torch.float64, device=truth.device)
    for start in range(0, t.shape[1], PIXEL_CHUNK):
        missed = (t[:, start:start + PIXEL_CHUNK] & ~p[:, start:start + PIXEL_CHUNK]).float()
        out += (missed @ p[:, start:start + PIXEL_CHUNK].float().T).double()  # exact: counts < 2^24 per chunk
    return out


Box = tuple[int, int, int, int]  # full-size (r0, r1, c0, c1)
BoxMask = tuple[Box, np.ndarray] | None  # a class's predicted box and its mask inside it; None: empty


def truth_boxes(bits: np.ndarray, width: int) -> list[Box | None]:
    """Per class, the tight bounding box of the packed (C, H, W/8) truth (None where empty), read from the bits."""
    return [packed_box(plane, width) for plane in bits]


def paste(item: BoxMask, region: Box) -> np.ndarray:
    """A class's predicted mask (box, crop) seen through `region`: a (rows, cols) bool array, False off the box."""
    r0, r1, c0, c1 = region
    out = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    if item is None:
        return out
    (b0, b1, d0, d1), mask = item
    i0, i1, j0, j1 = max(r0, b0), min(r1, b1), max(c0, d0), min(c1, d1)
    if i0 < i1 and j0 < j1:
        out[i0 - r0:i1 - r0, j0 - c0:j1 - c0] = mask[i0 - b0:i1 - b0, j0 - d0:j1 - d0]
    return out


def _intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), min(a[3], b[3]))
    return box if box[0] < box[1] and box[2] < box[3] else None


def confusion_counts_boxes(preds: list[BoxMask], bits: np.ndarray, truths: list[Box | None]) -> np.ndarray:
    """confusion_counts from boxes: [a, b] = |T_a & P_b & ~P_a| is counted where a's truth box meets b's predicted
    box (P_b is empty elsewhere), from a's missed pixels (truth and not predicted) computed once on its truth box."""
    out = np.zeros((len(preds), len(preds)), dtype=np.float64)
    for a, truth_box in enumerate(truths):
        if truth_box is None:
            continue
        missed = unpack_box(bits[a], truth_box) & ~paste(preds[a], truth_box)
        for b, item in enumerate(preds):
            region = None if item is None or b == a else _intersect(truth_box, item[0])
            if region is not None:
                out[a, b] = np.count_nonzero(paste(item, region) & paste((truth_box, missed), region))
    return out


def tight_box(item: BoxMask) -> Box | None:
    """The tight bounding box of a predicted mask given as (box, crop)."""
    if item is None:
        return None
    (r0, _, c0, _), mask = item
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if len(rows) == 0:
        return None
    return r0 + int(rows[0]), r0 + int(rows[-1]) + 1, c0 + int(cols[0]), c0 + int(cols[-1]) + 1


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a background 4-neighbour (the image border counts as background). OpenCV's erosion:
    the same result as scipy.ndimage.binary_erosion(mask, border_value=0), several times faster on bone boxes."""
    mask = np.ascontiguousarray(mask)
    inner = cv2.erode(mask.view(np.uint8), CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return mask & ~inner.view(bool)


def near(points: np.ndarray) -> np.ndarray:
    """The pixels within BOUNDARY_NEAR (Euclidean) of a set pixel: a dilation by that disk (OpenCV)."""
    return cv2.dilate(points.view(np.uint8), NEAR_DISK, borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)


class BoundaryStats:
    """Per class: wrong pixels near the true boundary and all wrong pixels; a histogram of surface distances."""

    def __init__(self, num_classes: int):
        self.near = np.zeros(num_classes, dtype=np.int64)
        self.wrong = np.zeros(num_classes, dtype=np.int64)
        self.dist_sum = np.zeros(num_classes, dtype=np.float64)
        self.hist = np.zeros((num_classes, int(DIST_MAX / DIST_BIN) + 1), dtype=np.int64)

    def update(self, truth: torch.Tensor, pred: torch.Tensor) -> None:
        """(C, H, W) bool masks of one image (any device); only each class's bounding box goes to the CPU."""
        either = truth | pred
        rows, cols = either.any(2), either.any(1)
        for c in range(truth.shape[0]):
            ys, xs = torch.nonzero(rows[c]).flatten(), torch.nonzero(cols[c]).flatten()
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
            self._update_class(c, truth[c, y0:y1, x0:x1].cpu().numpy(), pred[c, y0:y1, x0:x1].cpu().numpy())

    def update_boxes(self, preds: list[BoxMask], bits: np.ndarray, truths: list[Box | None]) -> None:
        """`update` from boxes: each class on the tight box of truth | prediction, as `update` crops it."""
        for c, (item, truth_box) in enumerate(zip(preds, truths)):
            pred_box = tight_box(item)
            boxes = [b for b in (truth_box, pred_box) if b is not None]
            if not boxes:
                continue
            box = (min(b[0] for b in boxes), max(b[1] for b in boxes),
                   min(b[2] for b in boxes), max(b[3] for b in boxes))
            self._update_class(c, unpack_box(bits[c], box), paste(item, box))

    def _update_class(self, c: int, t: np.ndarray, p: np.ndarray) -> None:
        """Class c's masks on a box holding both: one pixel of background is added around it, so the erosion
        there matches the full image's. Near: within NEAR_DISK of a true boundary pixel (what a distance transform
        <= BOUNDARY_NEAR gives); surface distances: nearest boundary pixels by scipy's k-d tree, exact Euclidean
        as the distance transform, at a cost that follows the boundaries rather than the box."""
        t, p = np.pad(t, 1), np.pad(p, 1)
        wrong = t ^ p
        self.wrong[c] += int(np.count_nonzero(wrong))
        bt = boundary(t)
        if not bt.any():
            return  # a bone predicted where there is none: no boundary to be near
        self.near[c] += int(np.count_nonzero(wrong & near(bt)))
        bp = boundary(p)
        if not bp.any():
            return
        true_points, pred_points = np.argwhere(bt), np.argwhere(bp)
        distances = np.concatenate([cKDTree(true_points).query(pred_points)[0],
                                    cKDTree(pred_points).query(true_points)[0]])
        self.dist_sum[c] += distances.sum()
        bins = np.minimum(np.rint(distances / DIST_BIN).astype(np.int64), self.hist.shape[1] - 1)
        self.hist[c] += np.bincount(bins, minlength=self.hist.shape[1])

    def add(self, other: BoundaryStats) -> None:
        """Adds another's counts (one image's, measured in a worker thread)."""
        for name in ("near", "wrong", "dist_sum", "hist"):
            getattr(self, name)[...] += getattr(other, name)

    def near_share(self) -> np.ndarray:
        """Share of wrong pixels within BOUNDARY_NEAR of the true boundary (nan: no wrong pixel)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.wrong > 0, self.near / np.maximum(self.wrong, 1), np.nan)

    def mean_distance(self) -> np.ndarray:
        count = self.hist.sum(1)
        return np.where(count > 0, self.dist_sum / np.maximum(count, 1), np.nan)

    def percentile_distance(self, q: float = 95.0) -> np.ndarray:
        """From the histogram: the q-th percentile, to DIST_BIN / 2 (the first distance reaching q% of all)."""
        count = self.hist.sum(1)
        cum = self.hist.cumsum(1)
        out = np.full(len(count), np.nan)
        for c in np.flatnonzero(count):
            out[c] = int(np.searchsorted(cum[c], q / 100 * count[c])) * DIST_BIN
        return out
