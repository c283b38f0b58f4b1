"""Task modes, the way segmentation-models-pytorch threads its modes through losses and metrics: a mode owns the
activation, the losses' mode, the validation metric and how probabilities become masks. The trainer, predictor,
threshold tuning and inference ask the mode; they never test its name.

- multilabel: sigmoid per class, a pixel may hold several classes; bit-plane targets; mean Dice per image.
- multiclass: softmax over the classes (the first is the background), one label per pixel; label-map targets;
  mIoU from a confusion matrix over the whole validation set; argmax.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from trainer.metrics import DiceScore
from trainer.miou import ConfusionMatrix, format_iou_table
from utils.errors import ConfigError


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
    itself, or trainer.fullsize's lazy FullSizeProbs (its members' model-resolution parts and weights)."""
    if isinstance(probs, torch.Tensor):
        return probs
    return mean_full_size(probs.parts, probs.size)


class Multilabel:
    name = "multilabel"
    loss_mode = "multilabel"  # smp's mode for DiceLoss, JaccardLoss, FocalLoss, ...
    label_kind = "bits"  # the cache stores one bit plane per class
    metric = "dice"  # record keys val_dice / best_dice
    metric_title = "Dice"

    @staticmethod
    def activation(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid_()

    @staticmethod
    def new_score(num_classes: int, device):
        return _DiceAdapter(num_classes, device)

    @staticmethod
    def format_table(classes: list[str], values: list[float]) -> str:
        cells = [f"{name:>12s} {value:.4f}" for name, value in zip(classes, values)]
        return "\n".join("  ".join(cells[i:i + 4]) for i in range(0, len(cells), 4))


class Multiclass:
    name = "multiclass"
    loss_mode = "multiclass"
    label_kind = "map"  # the cache stores one uint8 label map
    metric = "miou"
    metric_title = "mIoU"

    @staticmethod
    def activation(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().softmax(1)

    @staticmethod
    def new_score(num_classes: int, device):
        return _MiouAdapter(num_classes, device)

    @staticmethod
    def format_table(classes: list[str], values: list[float]) -> str:
        return format_iou_table(classes, values)

    @staticmethod
    def labels(parts: list[tuple[torch.Tensor, float]], size: tuple[int, int]) -> torch.Tensor:
        """(H, W) argmax labels of the weighted mean probabilities at the image's own size."""
        return mean_full_size(parts, size).argmax(0).to(torch.uint8)


class _DiceAdapter:
    """Multilabel validation: per-image Dice of `p > threshold` at the original size, counted inside the boxes
    where a mask can be positive (trainer.fullsize), against the packed truth."""

    def __init__(self, num_classes: int, device):
        self.score = DiceScore(num_classes, device)

    def add(self, probs: torch.Tensor, truth, index: int, threshold: float) -> None:
        from trainer.fullsize import FullSizeProbs, dice_counts

        full = FullSizeProbs([(probs, 1.0)], truth.original_size(index))
        self.score.update_counts(*dice_counts(full, threshold, truth.mask_bits(index)))

    def compute(self) -> tuple[float, list[float], dict]:
        score, per_class = self.score.compute()
        return score, per_class, {}


class _MiouAdapter:
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


MODES = {"multilabel": Multilabel, "multiclass": Multiclass}


def build_mode(name: str):
    if name not in MODES:
        raise ConfigError(f"task.mode: unknown mode {name!r} (choose from {', '.join(MODES)})")
    return MODES[name]()
