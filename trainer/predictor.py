"""One predictor for validation, inference and ensembles, so the score seen in training is computed by the code
that writes the submission: whole-image resize or sliding window with Gaussian blending, optional flip TTA;
trainer/fullsize.py takes the model-resolution probabilities to each image's own size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modes import Multilabel
from utils.config import PredictConfig


def model_input(images: torch.Tensor, mean: float, std: float, augment=None, masks: torch.Tensor | None = None):
    """uint8 (B, C, H, W) -> normalized float; a float batch was normalized on the CPU already and passes as is.

    `augment(x, masks)` (the GPU augmentations) runs between, on [0, 1] images.
    """
    from_uint8 = images.dtype == torch.uint8
    x = images.float().div_(255) if from_uint8 else images.float()
    if augment is not None:
        x, masks = augment(x, masks)
    if from_uint8:
        x = x.sub_(mean).div_(std)
    return x, masks


def gaussian_window(size: int, device, sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Importance map for blending tiles: centre pixels weigh more than tile borders (as in nnU-Net)."""
    coords = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-0.5 * (coords / (size * sigma_scale)) ** 2)
    w = g[:, None] * g[None, :]
    return (w / w.max()).clamp_min_(1e-3)


def tile_starts(length: int, window: int, overlap: float) -> list[int]:
    """Window starts covering [0, length): stride window * (1 - overlap), the last one flush with the end."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1 - overlap)))
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


class Predictor:
    """Call with a batch of images at the model's input size; returns probabilities at that size: the task mode's
    `activation` of the logits (sigmoid for multilabel, softmax for multiclass), averaged over windows and TTA."""

    def __init__(self, model: nn.Module, cfg: PredictConfig, runtime, mean: float, std: float,
                 channels_last: bool = False, window: int | None = None, activation=None):
        self.model = model
        self.activation = activation or Multilabel.activation
        self.cfg = cfg
        self.runtime = runtime
        self.mean, self.std = mean, std
        self.channels_last = channels_last
        self.window = cfg.window or window

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x, _ = model_input(images.to(self.runtime.device, non_blocking=True), self.mean, self.std)
        probs = self._predict(x)
        if self.cfg.tta == "hflip":
            probs = probs.add_(self._predict(x.flip(-1)).flip(-1)).mul_(0.5)
        return probs

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.mode == "sliding" and self.window and self.window < max(x.shape[-2:]):
            return self._sliding(x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.runtime.autocast():
            logits = self.model(x)
        # in the standard layout: full-size crops of a channels-last map go through the mirror of aten's
        # channels-last kernel (trainer/fullsize.py), which costs twice the separable one
        return self.activation(logits).contiguous()

    def _sliding(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        win = self.window
        weight = gaussian_window(win, x.device)
        overlap = self.cfg.overlap
        tiles = [(y0, x0) for y0 in tile_starts(h, win, overlap) for x0 in tile_starts(w, win, overlap)]
        out = norm = None
        for i in range(0, len(tiles), max(1, self.cfg.batch_size)):
            chunk = tiles[i:i + self.cfg.batch_size]
            crops = torch.cat([x[:, :, y0:y0 + win, x0:x0 + win] for y0, x0 in chunk])
            probs = self._forward(crops).view(len(chunk), b, -1, win, win)
            if out is None:
                out = torch.zeros(b, probs.shape[2], h, w, device=x.device)
                norm = torch.zeros(1, 1, h, w, device=x.device)
            for (y0, x0), p in zip(chunk, probs):
                out[:, :, y0:y0 + win, x0:x0 + win] += p * weight
                norm[:, :, y0:y0 + win, x0:x0 + win] += weight
        return out.div_(norm)


def to_full_size(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) probabilities -> (C, H, W) at the image's own size (bilinear), on the same device: the whole-image
    reference that trainer/fullsize.py reproduces inside its boxes (used by tests and benchmarks only)."""
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs
    return F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
