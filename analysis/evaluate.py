"""One pass over a run's validation fold at each image's original resolution with the shared predictor: per-image
and per-class Dice, Dice at every threshold, confusion between bones, boundary errors, and overlays of the K worst
images; then (optionally) a pass over the training images at training resolution for label-error candidates.
Only accumulators and K small overlays are kept, so memory stays flat over any number of images."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from analysis.measures import BoundaryStats, confusion_counts
from analysis.overlay import overlay_row, shrink
from data.dataset import ImageDataset, unpack_mask_bits
from data.handbone import scan_split
from data.pipeline import FoldData
from trainer.inference import ModelMember
from trainer.metrics import dice_per_class
from trainer.predictor import to_full_size
from trainer.thresholds import BINS, per_threshold_dice
from transforms.cpu import build_cpu_transforms
from utils.errors import UserError

OVERLAY_SIDE = 640  # overlays are drawn at this longer side (pixels) per panel


@dataclass
class FoldAnalysis:
    classes: list[str]
    threshold: float
    keys: list[str] = field(default_factory=list)  # validation images, in the order of `dice`
    dice: list[np.ndarray] = field(default_factory=list)  # per image: (C,) Dice at `threshold`
    threshold_dice: np.ndarray | None = None  # (C, BINS): mean Dice at thresholds 0, 0.01, ..., 0.99
    confusion: np.ndarray | None = None  # (C, C) normalised as in analysis.measures
    boundary: BoundaryStats | None = None
    worst: list = field(default_factory=list)  # [(mean Dice, key, overlay RGB)], worst first
    cleansing: list = field(default_factory=list)  # the same for training images

    @property
    def dice_matrix(self) -> np.ndarray:
        return np.stack(self.dice)


class _Worst:
    """The K lowest-scoring images with their overlays; an overlay is drawn only when its image enters."""

    def __init__(self, k: int):
        self.k, self.heap = k, []

    def wants(self, score: float) -> bool:
        return self.k > 0 and (len(self.heap) < self.k or score < -self.heap[0][0])

    def add(self, score: float, key: str, overlay: np.ndarray) -> None:
        heapq.heappush(self.heap, (-score, key, overlay))
        if len(self.heap) > self.k:
            heapq.heappop(self.heap)

    def sorted(self) -> list:
        return [(-s, key, overlay) for s, key, overlay in sorted(self.heap, key=lambda e: -e[0])]


def full_size(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The one place the report upsamples predictions to an image's own size (swappable for a faster one)."""
    return to_full_size(probs, size)


def _loader(member: ModelMember, data: FoldData, indices) -> DataLoader:
    cfg = member.cfg
    dataset = ImageDataset(data.cache, indices, build_cpu_transforms(cfg.transforms.val, "transforms.val"))
    return DataLoader(dataset, batch_size=cfg.data.val_batch_size, num_workers=cfg.data.num_workers)


def _overlay(image: np.ndarray, truth: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """Shrunk on the device first: only display-size masks go to the host."""
    return overlay_row(shrink(np.asarray(image), OVERLAY_SIDE), shrink(truth, OVERLAY_SIDE).cpu().numpy(),
                       shrink(pred, OVERLAY_SIDE).cpu().numpy(), max_side=OVERLAY_SIDE)


@torch.no_grad()
def analyze_fold(member: ModelMember, data: FoldData, runtime, k_worst: int = 6, cleansing: int = 6,
                 progress: bool = True) -> FoldAnalysis:
    cfg = member.cfg
    classes, threshold, device = cfg.task.classes, cfg.trainer.threshold, runtime.device
    if len(data.val_indices) == 0:
        raise UserError(f"{cfg.data.root}: the validation fold {cfg.data.fold} of {cfg.data.n_splits} is empty")
    out = FoldAnalysis(classes, threshold, boundary=BoundaryStats(len(classes)))
    threshold_sums = torch.zeros(len(classes), BINS, dtype=torch.float64, device=device)
    confusion = torch.zeros(len(classes), len(classes), dtype=torch.float64, device=device)
    truth_pixels = torch.zeros(len(classes), dtype=torch.float64, device=device)
    worst = _Worst(k_worst)
    for batch in tqdm(_loader(member, data, data.val_indices), desc="analyze validation fold", disable=not progress):
        probs = member.predictor(batch["image"])
        for p, index in zip(probs, batch["index"].tolist()):
            t = data.truth_index[index]
            size = data.truth.original_size(t)
            bits = torch.from_numpy(data.truth.mask_bits(t).copy()).to(device)
            truth = unpack_mask_bits(bits, size[1]).bool()
            p = full_size(p, size)
            pred = p > threshold
            dice = dice_per_class(pred, truth).cpu().numpy()
            out.keys.append(data.truth.keys[t])
            out.dice.append(dice)
            threshold_sums += per_threshold_dice(p, truth)
            confusion += confusion_counts(truth, pred)
            truth_pixels += truth.flatten(1).sum(1, dtype=torch.float64)
            out.boundary.update(truth, pred)
            if worst.wants(float(dice.mean())):
                worst.add(float(dice.mean()), data.truth.keys[t], _overlay(data.truth.image(t), truth, pred))
    out.threshold_dice = (threshold_sums / len(out.dice)).cpu().numpy()
    out.confusion = (confusion / truth_pixels.clamp_min(1)[:, None]).cpu().numpy()
    out.worst = worst.sorted()
    if cleansing:
        out.cleansing = _training_disagreement(member, data, runtime, cleansing, progress)
    return out


def _training_disagreement(member: ModelMember, data: FoldData, runtime, k: int, progress: bool) -> list:
    """Training images with the lowest Dice against their own labels, at training resolution: candidates for
    label errors (pseudo-labelled images are left out)."""
    n_labelled = len(scan_split(member.cfg.data.root, "train"))
    indices = [int(i) for i in data.train_indices if i < n_labelled]
    threshold, worst = member.cfg.trainer.threshold, _Worst(k)
    for batch in tqdm(_loader(member, data, indices), desc="score training images", disable=not progress):
        probs = member.predictor(batch["image"])
        for p, index in zip(probs, batch["index"].tolist()):
            image = data.cache.image(index)
            bits = torch.from_numpy(data.cache.mask_bits(index).copy()).to(runtime.device)
            truth = unpack_mask_bits(bits, image.shape[1]).bool()
            pred = full_size(p, image.shape) > threshold
            score = float(dice_per_class(pred, truth).mean())
            if worst.wants(score):
                worst.add(score, data.cache.keys[index], _overlay(image, truth, pred))
    return worst.sorted()
