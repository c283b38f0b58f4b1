"""Multiclass mode: softmax over the classes (the first is the background), one label per pixel; label-map
targets; the score is mIoU from one confusion matrix over the whole validation set; masks by argmax.

Labels at full size cost in proportion to the class boundaries, not the image (argmax_labels): bilinear upsampling
makes every full-size pixel a convex combination of the 2x2 model-resolution cells it reads (a quad), with the same
weights for every class. Where one class beats every other by more than a rounding margin in all four cells, it
wins every pixel of the quad, so those pixels take its label unseen; only the pixels of the other quads (along
the boundaries) are computed, with F.interpolate's arithmetic (modes.fullsize.pixel_values), and argmax'd. The
labels equal the dense path's (mean_full_size, then argmax) pixel for pixel on the CPU; on an accelerator, where
the dense map costs little and its rounding is not mirrored, the dense path runs.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from modes.fullsize import MARGIN, axis_table, one_thread, pixel_values, uses_channels_last_kernel
from modes.miou import ConfusionMatrix, format_iou_table


def mean_full_size(parts: list[tuple[torch.Tensor, float]], size: tuple[int, int]) -> torch.Tensor:
    """Weighted mean of (C, h, w) probability maps, each upsampled (bilinear) to `size`: the dense (C, H, W) map
    (DenseCRF and the pseudo-labels' confidence need every class at every pixel; argmax_labels does not)."""
    total, mean = 0.0, None
    for p, weight in parts:
        up = p if tuple(p.shape[-2:]) == tuple(size) else F.interpolate(
            p[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
        up = up * weight
        mean = up if mean is None else mean.add_(up)
        total += weight
    return mean.div_(total)


def dense_probs(probs) -> torch.Tensor:
    """One image's (C, H, W) mean probabilities from what the shared prediction loop yields: the full-size map
    itself, or modes.fullsize's lazy FullSizeProbs (its members' model-resolution parts and weights)."""
    if isinstance(probs, torch.Tensor):
        return probs
    return mean_full_size(probs.parts, probs.size)


def argmax_labels(parts: list[tuple[torch.Tensor, float]], size: tuple[int, int], rows: torch.Tensor | None = None,
                  cols: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 labels of `mean_full_size(parts, size).argmax(0)` at the full-size rows `rows` and columns `cols`
    (every one by default; the trash CSV needs only the 256x256 its nearest resize samples), computing only the
    pixels of quads without a clear winner (see the module's docstring)."""
    height, width = size
    rows, cols = _lines(rows, height), _lines(cols, width)
    labels = _boundary_labels(parts, size, rows, cols) if _quads_apply(parts) else None
    if labels is None:
        labels = mean_full_size(parts, size).argmax(0).to(torch.uint8)
        if (len(rows), len(cols)) != (height, width):
            labels = labels.index_select(0, rows.to(labels.device)).index_select(1, cols.to(labels.device))
    return labels


DENSE_SHARE = 0.5  # boundary pixels beyond this share of the image cost more one by one than densely (RESULTS.md)


def _boundary_labels(parts, size: tuple[int, int], rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor | None:
    """The labels at (rows x cols) by quad winners and the boundary pixels one by one; None when the boundary
    pixels are more than DENSE_SHARE of the image (noise-like maps), for the dense path."""
    kernels = [uses_channels_last_kernel(p, size) for p, _ in parts]  # read before one_thread changes the count
    with one_thread(parts[0][0].device):
        winner = None
        for p, _ in parts:
            lo_r, lo_c = (torch.from_numpy(axis_table(n, big)[0]) for n, big in zip(p.shape[-2:], size))
            member = _quad_winners(p).index_select(0, lo_r[rows]).index_select(1, lo_c[cols])
            winner = member if winner is None else torch.where(winner == member, winner, -1)
        r, c = torch.nonzero(winner < 0, as_tuple=True)
        if len(r) > DENSE_SHARE * size[0] * size[1]:
            return None
        labels = winner.clamp(min=0).to(torch.uint8)
        if len(r):
            total, mean = 0.0, None
            for (p, weight), kernel in zip(parts, kernels):  # as mean_full_size forms the mean
                up = pixel_values(p, size, rows[r], cols[c], kernel) * weight
                mean = up if mean is None else mean.add_(up)
                total += weight
            labels[r, c] = first_argmax(mean.div_(total))
    return labels


def first_argmax(values: torch.Tensor) -> torch.Tensor:
    """uint8 `values.argmax(0)` of a (C, n) tensor: the first of the largest, NaN above any number. A pass per
    class: torch's argmax over the first dimension of a (C, n) tensor is several times slower on the CPU."""
    if bool(values.isnan().any()):
        return values.argmax(0).to(torch.uint8)
    best, labels = values[0].clone(), torch.zeros(values.shape[1], dtype=torch.uint8)
    for c in range(1, values.shape[0]):
        higher = values[c] > best
        best = torch.maximum(best, values[c])
        labels.masked_fill_(higher, c)
    return labels


def _lines(lines: torch.Tensor | None, count: int) -> torch.Tensor:
    return torch.arange(count) if lines is None else torch.as_tensor(lines, dtype=torch.int64)


def _quads_apply(parts) -> bool:
    """The quad shortcut's conditions: CPU float32 maps of at least two classes (F.interpolate's arithmetic is
    mirrored on the CPU only), fewer than 256 classes (uint8 labels), weights whose products with a probability
    difference neither underflow nor overflow in float32."""
    return all(p.device.type == "cpu" and p.dtype == torch.float32 and 2 <= p.shape[0] < 256
               and 1e-30 <= weight <= 1e30 for p, weight in parts)


def _quad_winners(p: torch.Tensor) -> torch.Tensor:
    """(h, w) int16: per quad of cells (i..i+1, j..j+1, the last row and column repeated), the class that beats
    every other by more than the rounding margin in all four cells, or -1."""
    best = p.amax(0)  # NaN where a class is NaN: then no class is near it, and the cell is unclear
    near = p >= best - MARGIN * max(1.0, float(best.abs().max()))
    classes = torch.arange(p.shape[0], dtype=torch.int16, device=p.device).view(-1, 1, 1)
    index = (near * classes).sum(0, dtype=torch.int16)  # the near class where there is one
    cells = torch.where(near.sum(0, dtype=torch.int16) == 1, index, -1)  # 5x faster than topk(2) on the CPU
    cells = torch.cat([cells, cells[-1:]], 0)
    cells = torch.cat([cells, cells[:, -1:]], 1)
    quad = cells[:-1, :-1]
    same = (quad == cells[:-1, 1:]) & (quad == cells[1:, :-1]) & (quad == cells[1:, 1:])
    return torch.where(same, quad, -1)


class Multiclass:
    name = "multiclass"
    loss_mode = "multiclass"
    label_kind = "map"  # the cache stores one uint8 label map
    metric = "miou"
    metric_title = "mIoU"
    thresholded = False  # argmax: no threshold to tune
    extras = (("pixel_accuracy", "pixel accuracy"),)  # further validation numbers: (record key, printed title)

    @staticmethod
    def activation(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    @staticmethod
    def new_score(num_classes: int, device):
        return MiouAdapter(num_classes, device)

    @staticmethod
    def format_table(classes: list[str], values: list[float]) -> str:
        return format_iou_table(classes, values)

    @staticmethod
    def labels(parts: list[tuple[torch.Tensor, float]], size: tuple[int, int]) -> torch.Tensor:
        """(H, W) argmax labels of the weighted mean probabilities at the image's own size."""
        return argmax_labels(parts, size)


class MiouAdapter:
    """Multiclass validation: argmax at the original size, into one confusion matrix over the validation set."""

    def __init__(self, num_classes: int, device):
        self.matrix = ConfusionMatrix(num_classes, device)

    def add(self, probs: torch.Tensor, truth, index: int, threshold: float) -> None:
        pred = Multiclass.labels([(probs, 1.0)], truth.original_size(index))
        target = torch.from_numpy(np.array(truth.labels(index))).to(pred.device)  # a copy: cache views are read-only
        self.matrix.update(pred, target)

    def compute(self) -> tuple[float, list[float], dict]:
        miou, iou, accuracy = self.matrix.compute()
        # NaN (class in neither prediction nor truth) is not valid JSON: recorded as None
        return miou, [None if math.isnan(v) else v for v in iou], {"pixel_accuracy": accuracy}
