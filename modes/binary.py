"""Binary mode: one foreground class against the background (lesions, buildings, cracks): a sigmoid, bit-plane
targets and thresholds as in the multilabel mode (of which it is the one-class case), smp's binary losses, and the
score of such sets: foreground Dice per image (the metric) with foreground IoU per image beside it (val_iou)."""
from __future__ import annotations

import torch
import torch.distributed as dist

from modes.dice import DICE_EPS
from modes.fullsize import FullSizeProbs, dice_counts
from modes.multilabel import DiceAdapter, Multilabel


class Binary(Multilabel):
    name = "binary"
    loss_mode = "binary"  # smp's mode: one logit plane
    extras = (("iou", "IoU"),)  # recorded as val_iou, printed beside the Dice

    @staticmethod
    def new_score(num_classes: int, device):
        return DiceIouAdapter(num_classes, device)


class DiceIouAdapter(DiceAdapter):
    """Per image, from the same counts: Dice (2I + eps) / (P + T + eps) and IoU (I + eps) / (P + T - I + eps) of
    `p > threshold` at the original size; both means over images."""

    def __init__(self, num_classes: int, device):
        super().__init__(num_classes, device)
        self.iou_sum = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, probs: torch.Tensor, truth, index: int, threshold: float) -> None:
        full = FullSizeProbs([(probs, 1.0)], truth.original_size(index))
        inter, pred_area, truth_area = dice_counts(full, threshold, truth.mask_bits(index))
        self.score.update_counts(inter, pred_area, truth_area)
        iou = (inter + DICE_EPS) / (pred_area + truth_area - inter + DICE_EPS)
        self.iou_sum += iou.mean().to(self.iou_sum.device)

    def compute(self) -> tuple[float, list[float], dict]:
        score, per_class = self.score.compute()
        sums = torch.stack([self.iou_sum, self.score.count])  # the image count again: compute() reduced a copy
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        return score, per_class, {"iou": float(sums[0] / sums[1].clamp_min(1))}
