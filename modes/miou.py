"""The multi-class score: a confusion matrix accumulated over the whole validation set, then IoU per class =
TP / (TP + FP + FN), mIoU = the mean over the classes present in the prediction or the truth (background
included), and pixel accuracy. Accumulating one matrix (not a mean of per-image IoUs) is what the trash
competition scored."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist


class ConfusionMatrix:
    """Rows: truth, columns: prediction. `compute()` reduces across processes, so every rank gets the same score."""

    def __init__(self, num_classes: int, device):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """pred, target: integer label maps of the same shape (any number of images). Target pixels that are no
        class (void, e.g. VOC's 255: the layouts allow no other such value) are left out."""
        n = self.num_classes
        target, pred = target.reshape(-1).long(), pred.reshape(-1).long().to(target.device)
        scored = target < n
        if not bool(scored.all()):
            target, pred = target[scored], pred[scored]
        index = target * n + pred
        self.matrix += torch.bincount(index, minlength=n * n).view(n, n).to(self.matrix.device)

    def reduced(self) -> torch.Tensor:
        matrix = self.matrix.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(matrix)
        return matrix

    def compute(self) -> tuple[float, list[float], float]:
        """(mIoU, IoU per class (NaN for a class in neither prediction nor truth), pixel accuracy)."""
        return scores(self.reduced())


def scores(matrix: torch.Tensor) -> tuple[float, list[float], float]:
    m = matrix.double()
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp  # TP + FP + FN
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, math.nan))
    present = union > 0
    miou = float(iou[present].mean()) if present.any() else 0.0
    accuracy = float(tp.sum() / m.sum().clamp_min(1))
    return miou, iou.tolist(), accuracy


def format_iou_table(classes: list[str], iou: list[float], columns: int = 4) -> str:
    """Per-class IoU; '-' for a class absent from both prediction and truth (NaN or None)."""
    cells = [f"{name:>14s} {'     -' if v is None or math.isnan(v) else f'{v:.4f}'}" for name, v in zip(classes, iou)]
    return "\n".join("  ".join(cells[i:i + columns]) for i in range(0, len(cells), columns))
