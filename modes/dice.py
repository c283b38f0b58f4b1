"""The competition score: Dice per image and class, (2|A∩B| + eps) / (|A| + |B| + eps), mean over images then
classes, on thresholded masks at the images' original resolution."""
from __future__ import annotations

import torch
import torch.distributed as dist

DICE_EPS = 1e-4


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, eps: float = DICE_EPS) -> torch.Tensor:
    """pred, target: (C, H, W) bool for one image -> (C,) float64 Dice."""
    pred, target = pred.flatten(1), target.flatten(1)
    inter = (pred & target).sum(1, dtype=torch.float64)
    total = pred.sum(1, dtype=torch.float64) + target.sum(1, dtype=torch.float64)
    return (2 * inter + eps) / (total + eps)


class DiceScore:
    """Accumulates per-image Dice; `compute()` reduces across processes, so every rank gets the same score."""

    def __init__(self, num_classes: int, device):
        self.sums = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.sums += dice_per_class(pred, target)
        self.count += 1

    def update_counts(self, inter: torch.Tensor, pred_area: torch.Tensor, truth_area: torch.Tensor) -> None:
        """One image from per-class counts (float64), e.g. modes.fullsize.dice_counts: same Dice as `update`."""
        dice = (2 * inter + DICE_EPS) / (pred_area + truth_area + DICE_EPS)
        self.sums += dice.to(self.sums.device)
        self.count += 1

    def compute(self) -> tuple[float, list[float]]:
        sums, count = self.sums.clone(), self.count.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(count)
        per_class = (sums / count.clamp_min(1)).tolist()
        return sum(per_class) / len(per_class), per_class
