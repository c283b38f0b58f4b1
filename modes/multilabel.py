"""Multilabel mode: a sigmoid per class, so a pixel may hold several classes (overlapping bones); bit-plane
targets; the score is Dice per image and class at a threshold, mean over images then classes."""
from __future__ import annotations

import torch

from modes.dice import DiceScore
from modes.fullsize import FullSizeProbs, dice_counts


class Multilabel:
    name = "multilabel"
    loss_mode = "multilabel"  # smp's mode for DiceLoss, JaccardLoss, FocalLoss, ...
    label_kind = "bits"  # the cache stores one bit plane per class
    metric = "dice"  # record keys val_dice / best_dice
    metric_title = "Dice"
    thresholded = True  # masks are `p > threshold` (per-class thresholds can be tuned)
    extras = ()  # further validation numbers: (record key, title printed beside the metric)

    @staticmethod
    def activation(logits: torch.Tensor) -> torch.Tensor:
        return logits.float().sigmoid_()

    @staticmethod
    def new_score(num_classes: int, device):
        return DiceAdapter(num_classes, device)

    @staticmethod
    def format_table(classes: list[str], values: list[float]) -> str:
        cells = [f"{name:>12s} {value:.4f}" for name, value in zip(classes, values)]
        return "\n".join("  ".join(cells[i:i + 4]) for i in range(0, len(cells), 4))


class DiceAdapter:
    """Multilabel validation: per-image Dice of `p > threshold` at the original size, counted inside the boxes
    where a mask can be positive (modes.fullsize), against the packed truth."""

    def __init__(self, num_classes: int, device):
        self.score = DiceScore(num_classes, device)

    def add(self, probs: torch.Tensor, truth, index: int, threshold: float) -> None:
        full = FullSizeProbs([(probs, 1.0)], truth.original_size(index))
        self.score.update_counts(*dice_counts(full, threshold, truth.mask_bits(index)))

    def compute(self) -> tuple[float, list[float], dict]:
        score, per_class = self.score.compute()
        return score, per_class, {}
