"""Per-class thresholds that maximize each class's validation Dice (the competition score, per image).

One pass over the validation fold: per image and class, histograms of the full-size probabilities (all pixels,
and pixels of the true mask) over BINS bins give, for every candidate threshold at once, the predicted area and
the intersection, hence the exact per-image Dice of every threshold on the grid.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from data.dataset import ImageDataset, unpack_mask_bits
from data.pipeline import prepare_fold
from trainer.inference import ModelMember
from trainer.metrics import DICE_EPS
from trainer.predictor import to_full_size
from transforms.cpu import build_cpu_transforms

BINS = 100  # candidate thresholds 0.01 .. 0.99


def tune_thresholds(member: ModelMember, runtime, progress: bool = True) -> dict:
    cfg = member.cfg
    data = prepare_fold(cfg, runtime, progress)
    dataset = ImageDataset(data.cache, data.val_indices, build_cpu_transforms(cfg.transforms.val, "transforms.val"))
    loader = DataLoader(dataset, batch_size=cfg.data.val_batch_size, num_workers=cfg.data.num_workers)
    n_classes = len(cfg.task.classes)
    dice_sums = torch.zeros(n_classes, BINS, dtype=torch.float64, device=runtime.device)
    count = 0
    for batch in tqdm(loader, desc="tune thresholds", disable=not progress):
        probs = member.predictor(batch["image"])
        for p, index in zip(probs, batch["index"].tolist()):
            t = data.truth_index[index]
            size = data.truth.original_size(t)
            bits = torch.from_numpy(data.truth.mask_bits(t).copy()).to(runtime.device)
            dice_sums += per_threshold_dice(to_full_size(p, size), unpack_mask_bits(bits, size[1]).bool())
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
    c = probs.shape[0]
    # `p > b / BINS` holds exactly when ceil(p * BINS) - 1 >= b
    bins = (probs.flatten(1) * BINS).ceil_().sub_(1).clamp_(-1, BINS - 1).long()
    offsets = torch.arange(c, device=probs.device)[:, None] * (BINS + 1)
    flat = (bins + 1 + offsets).flatten()
    hist_all = torch.bincount(flat, minlength=c * (BINS + 1)).view(c, BINS + 1)
    hist_true = torch.bincount(flat[truth.flatten()], minlength=c * (BINS + 1)).view(c, BINS + 1)
    # counts of pixels with bin >= b, for b = 0 .. BINS - 1 (column 0 of the histogram holds p == 0)
    above_all = hist_all.flip(1).cumsum(1).flip(1)[:, 1:].double()
    above_true = hist_true.flip(1).cumsum(1).flip(1)[:, 1:].double()
    truth_area = truth.flatten(1).sum(1, keepdim=True).double()
    return (2 * above_true + DICE_EPS) / (above_all + truth_area + DICE_EPS)
