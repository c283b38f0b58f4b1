"""One pass over a run's validation fold at each image's original resolution with the shared predictor: per-image
and per-class Dice, Dice at every threshold, confusion between bones, boundary errors, and overlays of the K worst
images; then (optionally) a pass over the training images at training resolution for label-error candidates.
Only accumulators and K small overlays are kept, so memory stays flat over any number of images.

Every measure comes from modes.fullsize.FullSizeProbs: per class, the box outside which no pixel can exceed the
threshold and the exact full-size values inside it, with the packed truth unpacked only where needed; the numbers
equal those of the full-size maps (analysis.measures' reference functions; tests/test_analyze.py checks it) at a
cost that follows the bones, not the image."""
from __future__ import annotations

import heapq
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from analysis.measures import BoundaryStats, BoxMask, confusion_counts_boxes, truth_boxes
from analysis.overlay import overlay_row, shrink
from data.dataset import ImageDataset
from data.pipeline import FoldData
from modes.dice import DICE_EPS
from modes.fullsize import FullSizeProbs, bits_count, one_thread, unpack_box
from trainer.inference import ModelMember
from trainer.thresholds import BINS, per_threshold_dice_boxes
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
        """(score, key, overlay) worst first; an overlay given as a one-item list (filled later) is unwrapped."""
        entries = sorted(self.heap, key=lambda e: -e[0])
        return [(-s, key, overlay[0] if isinstance(overlay, list) else overlay) for s, key, overlay in entries]


def predicted_masks(probs: FullSizeProbs, threshold: float) -> list[BoxMask]:
    """Per class, (box, `probs > threshold` inside it as a numpy bool array) or None where empty for sure."""
    return [None if item is None else (item[0], item[1].cpu().numpy()) for item in probs.masks(threshold)]


def image_dice(preds: list[BoxMask], bits: np.ndarray) -> np.ndarray:
    """(C,) float64 Dice of one image, modes.dice.dice_per_class's definition, from boxes and packed truth."""
    inter = np.zeros(len(preds))
    area = np.zeros(len(preds))
    for c, item in enumerate(preds):
        if item is not None:
            box, mask = item
            inter[c] = np.count_nonzero(mask & unpack_box(bits[c], box))
            area[c] = np.count_nonzero(mask)
    return (2 * inter + DICE_EPS) / (area + bits_count(bits) + DICE_EPS)


def display_masks(preds: list[BoxMask], bits: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """(truth, prediction) as analysis.overlay.shrink(full mask, OVERLAY_SIDE) gives them, without full masks."""
    return _display_truth(bits, size), display_prediction(preds, size)


def _display_step(size: tuple[int, int]) -> int:
    return max(1, -(-max(size) // OVERLAY_SIDE))


def _display_truth(bits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    step = _display_step(size)
    return np.unpackbits(bits[:, ::step], axis=2)[:, :, :size[1]:step].view(bool)


def display_prediction(preds: list[BoxMask], size: tuple[int, int]) -> np.ndarray:
    """The predicted masks at display size: what an image keeps for its overlay (a few MB, not its crops)."""
    step = _display_step(size)
    pred = np.zeros((len(preds), -(-size[0] // step), -(-size[1] // step)), dtype=bool)
    for c, item in enumerate(preds):
        if item is not None:
            (r0, _, c0, _), mask = item
            rs, cs = -(-r0 // step), -(-c0 // step)  # the first kept row / column at or after the box's start
            part = mask[rs * step - r0::step, cs * step - c0::step]
            pred[c, rs:rs + part.shape[0], cs:cs + part.shape[1]] = part
    return pred


def _loader(member: ModelMember, data: FoldData, indices) -> DataLoader:
    cfg = member.cfg
    dataset = ImageDataset(data.cache, indices, build_cpu_transforms(cfg.transforms.val, "transforms.val"))
    return DataLoader(dataset, batch_size=cfg.data.val_batch_size, num_workers=cfg.data.num_workers)


def _overlay(image: np.ndarray, shown: np.ndarray, bits: np.ndarray, classes: list[str]) -> np.ndarray:
    """Drawn from display-size masks (only for images that enter a worst list); `shown`: display_prediction's.
    The errors panel names the bones with the most wrong pixels."""
    truth = _display_truth(bits, image.shape)
    return overlay_row(shrink(np.asarray(image), OVERLAY_SIDE), truth, shown, max_side=OVERLAY_SIDE, classes=classes)


@dataclass
class _ImageMeasures:
    dice: np.ndarray
    threshold_dice: torch.Tensor
    confusion: np.ndarray
    boundary: BoundaryStats
    shown: np.ndarray  # display_prediction


def _measure(p: torch.Tensor, bits: np.ndarray, size: tuple[int, int], threshold: float) -> _ImageMeasures:
    """Every measure of one validation image (runs in a worker thread)."""
    full = FullSizeProbs([(p, 1.0)], size)
    preds = predicted_masks(full, threshold)
    truths = truth_boxes(bits, size[1])
    boundary = BoundaryStats(len(preds))
    boundary.update_boxes(preds, bits, truths)
    return _ImageMeasures(image_dice(preds, bits), per_threshold_dice_boxes(full, bits),
                          confusion_counts_boxes(preds, bits, truths), boundary, display_prediction(preds, size))


class _Workers:
    """The per-image measures of a batch run in threads, one image each, with one intra-op thread apiece (crops are
    small): numpy, OpenCV, scipy and torch release the GIL in their loops, so a batch uses every core where the
    forward pass did. Results come back in the images' order, so every sum is the same as one thread's."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()))

    def map(self, fn, *args) -> list:
        with one_thread(self.device):
            return list(self.pool.map(fn, *args))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.shutdown()


def _add_overlays(workers: _Workers, worst: _Worst, scored: list, draw) -> None:
    """Offers each (score, key, args) to `worst` in order; the overlays of those still kept are drawn in the
    threads, by draw(*args)."""
    pending = []
    for score, key, args in scored:
        if worst.wants(score):
            entry = [None]  # filled below
            worst.add(score, key, entry)
            pending.append((entry, args))
    kept = [(entry, args) for entry, args in pending if any(e[2] is entry for e in worst.heap)]
    for (entry, _), overlay in zip(kept, workers.map(lambda item: draw(*item[1]), kept)):
        entry[0] = overlay


@torch.no_grad()
def analyze_fold(member: ModelMember, data: FoldData, runtime, k_worst: int = 6, cleansing: int = 6,
                 progress: bool = True) -> FoldAnalysis:
    cfg = member.cfg
    classes, threshold = cfg.task.classes, cfg.trainer.threshold
    if len(data.val_indices) == 0:
        raise UserError(f"{cfg.data.root}: the validation fold {cfg.data.fold} of {cfg.data.n_splits} is empty")
    out = FoldAnalysis(classes, threshold, boundary=BoundaryStats(len(classes)))
    threshold_sums = torch.zeros(len(classes), BINS, dtype=torch.float64)
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    truth_pixels = np.zeros(len(classes), dtype=np.float64)
    worst = _Worst(k_worst)
    with _Workers(runtime.device) as workers:
        for batch in tqdm(_loader(member, data, data.val_indices), desc="analyze validation fold",
                          disable=not progress):
            probs = member.predictor(batch["image"])
            truth = [data.truth_index[i] for i in batch["index"].tolist()]
            bits = [data.truth.mask_bits(t) for t in truth]
            sizes = [data.truth.original_size(t) for t in truth]
            scored = []
            for t, b, m in zip(truth, bits, workers.map(_measure, probs, bits, sizes, [threshold] * len(truth))):
                threshold_sums += m.threshold_dice
                confusion += m.confusion
                out.boundary.add(m.boundary)
                truth_pixels += bits_count(b)
                out.keys.append(data.truth.keys[t])
                out.dice.append(m.dice)
                scored.append((float(m.dice.mean()), data.truth.keys[t], (t, m.shown, b)))
            _add_overlays(workers, worst, scored,
                          lambda t, shown, b: _overlay(data.truth.image(t), shown, b, classes))
        out.threshold_dice = (threshold_sums / len(out.dice)).numpy()
        out.confusion = confusion / np.maximum(truth_pixels, 1)[:, None]
        out.worst = worst.sorted()
        if cleansing:
            out.cleansing = _training_disagreement(member, data, workers, cleansing, progress)
    return out


def _training_disagreement(member: ModelMember, data: FoldData, workers: _Workers, k: int, progress: bool) -> list:
    """Training images with the lowest Dice against their own labels, at training resolution: candidates for
    label errors (pseudo-labelled images are left out)."""
    indices = data.labelled_train_indices().tolist()
    threshold, worst = member.cfg.trainer.threshold, _Worst(k)

    def score(p, index):
        image, bits = data.cache.image(index), data.cache.mask_bits(index)
        preds = predicted_masks(FullSizeProbs([(p, 1.0)], image.shape), threshold)
        shown = display_prediction(preds, image.shape)
        return float(image_dice(preds, bits).mean()), data.cache.keys[index], (image, shown, bits)

    for batch in tqdm(_loader(member, data, indices), desc="score training images", disable=not progress):
        scored = workers.map(score, member.predictor(batch["image"]), batch["index"].tolist())
        _add_overlays(workers, worst, scored,
                      lambda image, shown, bits: _overlay(image, shown, bits, member.cfg.task.classes))
    return worst.sorted()
