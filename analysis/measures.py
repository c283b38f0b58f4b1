"""Error measures of multi-label masks, accumulated image by image so memory stays flat over a fold.

Confusion between bones, in multi-label terms: C[a, b] = (pixels of bone a's truth that are predicted as b and not
as a) / (pixels of bone a's truth), summed over images before dividing. The diagonal is zero by construction; a row
sums to more than a's miss rate when a missed pixel goes to several bones.

Boundary error per class: the wrong pixels (truth XOR prediction) within `near` pixels of the true boundary, as a
share of all wrong pixels; and the symmetric surface distance (each boundary pixel of one mask to the nearest
boundary pixel of the other), its mean and 95th percentile. Distances by scipy's exact Euclidean distance
transform, on each bone's bounding box only (a bone covers a few percent of a 2048 px image).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

BOUNDARY_NEAR = 2.0  # pixels: a wrong pixel this close to the true boundary counts as a boundary error
DIST_BIN = 0.5  # surface distances are histogrammed, rounded to half a pixel, up to DIST_MAX (last bin: the rest)
DIST_MAX = 256.0
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


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels with a background 4-neighbour (the image border counts as background)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


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
            # one pixel of background around the box: erosion there matches the full image
            t = np.pad(truth[c, y0:y1, x0:x1].cpu().numpy(), 1)
            p = np.pad(pred[c, y0:y1, x0:x1].cpu().numpy(), 1)
            self._update_class(c, t, p)

    def _update_class(self, c: int, t: np.ndarray, p: np.ndarray) -> None:
        wrong = t ^ p
        bt = boundary(t)
        if not bt.any():
            self.wrong[c] += int(wrong.sum())  # a bone predicted where there is none: no boundary to be near
            return
        to_true = ndimage.distance_transform_edt(~bt)
        self.wrong[c] += int(wrong.sum())
        self.near[c] += int((wrong & (to_true <= BOUNDARY_NEAR)).sum())
        bp = boundary(p)
        if not bp.any():
            return
        distances = np.concatenate([to_true[bp], ndimage.distance_transform_edt(~bp)[bt]])
        self.dist_sum[c] += distances.sum()
        bins = np.minimum(np.rint(distances / DIST_BIN).astype(np.int64), self.hist.shape[1] - 1)
        self.hist[c] += np.bincount(bins, minlength=self.hist.shape[1])

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
