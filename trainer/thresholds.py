"""Per-class thresholds that maximize each class's validation Dice (the competition score, per image).

One pass over the validation fold: per image and class, histograms of the full-size probabilities (all pixels,
and pixels of the true mask; computed only in the boxes where a pixel can exceed 1 / BINS) over BINS bins give,
for every candidate threshold at once, the predicted area and the intersection, hence the exact per-image Dice of
every threshold on the grid.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.dataset import ImageDataset
from data.pipeline import prepare_fold
from modes.dice import DICE_EPS
from modes.fullsize import FullSizeProbs, bin_counts, bits_count, one_thread, unpack_box, value_bins
from trainer.inference import ModelMember
from transforms.cpu import build_cpu_transforms

BINS = 100  # candidate thresholds 0.01 .. 0.99


def tune_thresholds(member: ModelMember, runtime, progress: bool = True) -> dict:
    cfg = member.cfg
    data = prepare_fold(cfg, member.task.layout, runtime, progress)
    dataset = ImageDataset(data.cache, data.val_indices, build_cpu_transforms(cfg.transforms.val, "transforms.val"))
    loader = DataLoader(dataset, batch_size=cfg.data.val_batch_size, num_workers=cfg.data.num_workers)
    n_classes = len(cfg.task.classes)
    dice_sums = torch.zeros(n_classes, BINS, dtype=torch.float64, device=runtime.device)
    count = 0
    for batch in tqdm(loader, desc="tune thresholds", disable=not progress):
        probs = member.predictor(batch["image"])
        for p, index in zip(probs, batch["index"].tolist()):
            t = data.truth_index[index]
            full = FullSizeProbs([(p, 1.0)], data.truth.original_size(t))
            dice_sums += per_threshold_dice_boxes(full, data.truth.mask_bits(t)).to(runtime.device)
            count += 1
    mean = (dice_sums / max(count, 1)).cpu()
    best = mean[:, 1:].argmax(1) + 1  # bin 0 (threshold 0) would mark every pixel
    thresholds = {c: round(int(b) / BINS, 4) for c, b in zip(cfg.task.classes, best)}
    scores = {c: float(mean[i, b]) for i, (c, b) in enumerate(zip(cfg.task.classes, best))}
    at_default = mean[:, round(cfg.trainer.threshold * BINS)].mean().item()
    return {"thresholds": thresholds, "val_dice_per_class": scores,
            "val_dice": sum(scores.values()) / n_classes, "val_dice_at_default": at_default, "images": count}


def per_threshold_dice(probs: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """(C, H, W) probabilities and bool truth -> (C, BINS) Dice of `probs > b / BINS` for each bin b."""
    above_all, above_true = _above_counts(probs.flatten(1), truth.flatten(1))
    return _dice(above_all, above_true, truth.flatten(1).sum(1, keepdim=True).double())


def per_threshold_dice_boxes(probs: FullSizeProbs, bits: np.ndarray) -> torch.Tensor:
    """per_threshold_dice from the packed (C, H, W/8) truth and the pixels that can exceed the lowest candidate,
    1 / BINS: counted by quads where the model's cells allow it (modes.fullsize.bin_counts), else from the values
    in the boxes. Elsewhere every pixel falls in bin 0, which only column 0 (threshold 0, never chosen) counts:
    there it is taken as every pixel (sigmoid outputs are > 0); columns 1.. are exact."""
    c = probs.num_classes
    with one_thread(probs.device):
        counts = bin_counts(probs, bits, BINS)
        if counts is not None:
            above_all, above_true = (_at_or_above(h).double() for h in counts)
        else:
            above_all = torch.zeros(c, BINS, dtype=torch.float64)
            above_true = torch.zeros(c, BINS, dtype=torch.float64)
            for k, box in enumerate(probs.boxes(1 / BINS)):
                if box is not None:
                    values = probs.crop(k, box).cpu().flatten()[None]
                    truth = torch.from_numpy(unpack_box(bits[k], box).reshape(1, -1))
                    above_all[k], above_true[k] = (a[0] for a in _above_counts(values, truth))
    truth_area = torch.from_numpy(bits_count(bits).astype(np.float64))[:, None]
    above_all[:, 0] = probs.size[0] * probs.size[1]
    above_true[:, 0] = truth_area[:, 0]
    return _dice(above_all, above_true, truth_area)


def _above_counts(probs: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, N) probabilities and bool truth -> (C, BINS) float64 counts of pixels (all, true) with bin >= b."""
    c = probs.shape[0]
    bins = value_bins(probs, BINS)
    offsets = torch.arange(c, device=probs.device)[:, None] * (BINS + 1)
    flat = (bins + 1 + offsets).flatten()
    hist_all = torch.bincount(flat, minlength=c * (BINS + 1)).view(c, BINS + 1)
    hist_true = torch.bincount(flat[truth.flatten()], minlength=c * (BINS + 1)).view(c, BINS + 1)
    # counts of pixels with bin >= b, for b = 0 .. BINS - 1 (column 0 of the histogram holds p == 0)
    return _at_or_above(hist_all)[:, 1:].double(), _at_or_above(hist_true)[:, 1:].double()


def _at_or_above(hist: torch.Tensor) -> torch.Tensor:
    """Per row, the count in each column and every column after it."""
    return hist.flip(1).cumsum(1).flip(1)


def _dice(above_all: torch.Tensor, above_true: torch.Tensor, truth_area: torch.Tensor) -> torch.Tensor:
    return (2 * above_true + DICE_EPS) / (above_all + truth_area + DICE_EPS)
