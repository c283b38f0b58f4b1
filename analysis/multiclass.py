"""analyze.py --run for a multiclass (one label per pixel, e.g. trash) run: the same pass over the validation fold
as analysis.evaluate, but on argmax label maps: one (K, K) confusion matrix over the fold (truth x prediction,
background included; the run's mIoU comes from it exactly as modes.miou scores validation), per-image IoU,
boundary error per class, the K worst images and the training images the model disagrees with most. Void truth
pixels (a label past the classes, e.g. VOC's 255) are left out of every count and drawn in their own colour."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from analysis.evaluate import OVERLAY_SIDE, _loader, _Worst
from analysis.measures import BoundaryStats
from analysis.overlay import ALPHA, FP_COLOR, class_colors, shrink
from data.pipeline import FoldData
from modes import Multiclass
from modes.miou import scores
from trainer.inference import ModelMember
from utils.errors import UserError

VOID_COLOR = (224, 224, 192)  # Pascal VOC's colour of void


@dataclass
class MulticlassAnalysis:
    classes: list[str]
    counts: np.ndarray  # (K, K) int64 pixel counts over the fold: [truth, prediction]
    keys: list[str] = field(default_factory=list)
    iou: list[np.ndarray] = field(default_factory=list)  # per image: (K,) IoU, NaN where absent from both maps
    boundary: BoundaryStats | None = None
    worst: list = field(default_factory=list)  # [(image mIoU, key, overlay RGB)], worst first
    cleansing: list = field(default_factory=list)

    @property
    def iou_matrix(self) -> np.ndarray:
        return np.stack(self.iou)

    def scores(self) -> tuple[float, list[float], float]:
        """(mIoU, IoU per class, pixel accuracy) of the whole fold, modes.miou's definition."""
        return scores(torch.from_numpy(self.counts))


def label_confusion(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts of (truth label, predicted label) pairs over two label maps; void truth pixels (no
    class) left out."""
    truth, pred = truth.reshape(-1).astype(np.int64), pred.reshape(-1).astype(np.int64)
    scored = truth < num_classes
    index = truth[scored] * num_classes + pred[scored]
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each truth row divided by its pixel count: [a, b] = share of class a's pixels predicted as b (0 rows: 0)."""
    return counts / np.maximum(counts.sum(1, keepdims=True), 1)


def image_iou(counts: np.ndarray) -> np.ndarray:
    """(K,) IoU of one image from its confusion counts; NaN for a class in neither map."""
    tp = np.diag(counts).astype(np.float64)
    union = counts.sum(0) + counts.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def image_score(iou: np.ndarray) -> float:
    present = iou[~np.isnan(iou)]
    return float(present.mean()) if len(present) else 1.0


def color_labels(image: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Label map over the image: class 0 (background) left uncoloured, class k in class_colors' k-th colour, void
    (a label from `num_classes` on, when given) in VOID_COLOR."""
    base = _rgb(image).astype(np.float32)
    n = num_classes or (int(labels.max()) + 1 if labels.size else 1)
    colors = class_colors(n)
    fg = (labels > 0) & (labels < n)
    base[fg] = (1 - ALPHA) * base[fg] + ALPHA * colors[labels[fg]]
    void = labels >= n
    base[void] = (1 - ALPHA) * base[void] + ALPHA * np.asarray(VOID_COLOR, np.float32)
    return base.astype(np.uint8)


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.uint8)
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def label_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, num_classes: int | None = None
                  ) -> np.ndarray:
    """image | ground truth | prediction | errors (wrong label in red; void, a truth label from `num_classes` on,
    is no error) at display size, side by side."""
    image, truth, pred = (shrink(np.moveaxis(_rgb(image), 2, 0), OVERLAY_SIDE).transpose(1, 2, 0),
                          shrink(truth, OVERLAY_SIDE), shrink(pred, OVERLAY_SIDE))
    errors = image.copy()
    wrong = truth != pred if num_classes is None else (truth != pred) & (truth < num_classes)
    errors[wrong] = FP_COLOR
    gap = np.full((image.shape[0], 4, 3), 255, dtype=np.uint8)
    panels = [image, color_labels(image, truth, num_classes), color_labels(image, pred, num_classes), errors]
    return np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return labels.long()[None] == torch.arange(num_classes)[:, None, None]


@torch.no_grad()
def analyze_fold_multiclass(member: ModelMember, data: FoldData, k_worst: int = 6, cleansing: int = 6,
                            progress: bool = True) -> MulticlassAnalysis:
    cfg = member.cfg
    k = len(cfg.task.classes)
    if len(data.val_indices) == 0:
        raise UserError(f"{cfg.data.root}: the validation fold {cfg.data.fold} of {cfg.data.n_splits} is empty")
    out = MulticlassAnalysis(cfg.task.classes, np.zeros((k, k), dtype=np.int64), boundary=BoundaryStats(k))
    worst = _Worst(k_worst)
    for batch in tqdm(_loader(member, data, data.val_indices), desc="analyze validation fold", disable=not progress):
        for p, index in zip(member.predictor(batch["image"]), batch["index"].tolist()):
            t = data.truth_index[index]
            pred = Multiclass.labels([(p, 1.0)], data.truth.original_size(t)).cpu()
            truth = torch.from_numpy(np.array(data.truth.labels(t)))
            counts = label_confusion(truth.numpy(), pred.numpy(), k)
            out.counts += counts
            # boundary error per class on one-hot masks (BoundaryStats crops each class to its own box); under
            # void the prediction counts for no class either (label k matches no plane)
            out.boundary.update(_one_hot(truth, k), _one_hot(torch.where(truth >= k, k, pred.long()), k))
            iou = image_iou(counts)
            out.keys.append(data.truth.keys[t])
            out.iou.append(iou)
            if worst.wants(image_score(iou)):
                worst.add(image_score(iou), data.truth.keys[t],
                          label_overlay(data.truth.image(t), truth.numpy(), pred.numpy(), k))
    out.worst = worst.sorted()
    if cleansing:
        out.cleansing = _training_disagreement(member, data, cleansing, progress)
    return out


def _training_disagreement(member: ModelMember, data: FoldData, k: int, progress: bool) -> list:
    """Training images with the lowest mIoU against their own labels, at training resolution (label-error
    candidates; pseudo-labelled images are left out: their labels are the model's own)."""
    num_classes, worst = len(member.cfg.task.classes), _Worst(k)
    indices = data.labelled_train_indices().tolist()
    for batch in tqdm(_loader(member, data, indices), desc="score training images",
                      disable=not progress):
        for p, index in zip(member.predictor(batch["image"]), batch["index"].tolist()):
            image, truth = data.cache.image(index), np.array(data.cache.labels(index))
            pred = Multiclass.labels([(p, 1.0)], truth.shape).cpu().numpy()
            score = image_score(image_iou(label_confusion(truth, pred, num_classes)))
            if worst.wants(score):
                worst.add(score, data.cache.keys[index], label_overlay(image, truth, pred, num_classes))
    return worst.sorted()
