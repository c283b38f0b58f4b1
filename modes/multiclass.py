"""Multiclass mode: softmax over the classes (the first is the background), one label per pixel; label-map
targets; the score is mIoU from one confusion matrix over the whole validation set; masks by argmax."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from modes.miou import ConfusionMatrix, format_iou_table


def mean_full_size(parts: list[tuple[torch.Tensor, float]], size: tuple[int, int]) -> torch.Tensor:
    """Weighted mean of (C, h, w) probability maps, each upsampled (bilinear) to `size`: the dense (C, H, W) map
    a multi-class argmax needs (every class competes at every pixel, so no box shortcut applies)."""
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
        return mean_full_size(parts, size).argmax(0).to(torch.uint8)


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
