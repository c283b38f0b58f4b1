"""Sobel edge-magnitude augmentation for the CPU (albumentations) pipeline.

Written by hand because albumentations has no Sobel transform (Emboss and Sharpen are the closest),
while published hand-bone segmentation teams used a Sobel edge image as a random augmentation.
Being an ``ImageOnlyTransform`` it composes with the other albumentations ops and leaves the mask alone.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from albumentations.core.transforms_interface import ImageOnlyTransform

_VALID_KSIZES = (1, 3, 5, 7)


def _step_gain(ksize: int) -> float:
    """Response of the Sobel x-derivative to a unit step edge.

    Dividing the magnitude by it maps a full-contrast step (0 -> max) to the full value range,
    whatever the kernel size (4 for ksize=3, 48 for ksize=5, ...).
    """
    deriv, smooth = cv2.getDerivKernels(1, 0, ksize, normalize=False)
    return float(deriv[deriv > 0].sum() * smooth.sum())


def sobel_magnitude(image: np.ndarray, ksize: int = 3) -> np.ndarray:
    """Edge magnitude sqrt(gx^2 + gy^2) of a (H, W) or (H, W, C) image, in the input's dtype and range.

    uint8: a full step edge gives 255; values are clipped to 0..255 (diagonal edges can exceed it by sqrt 2).
    float: same scaling (a step of height h gives about h), not clipped since float images may be normalized.
    """
    src = image.astype(np.float32, copy=False)
    gx = cv2.Sobel(src, cv2.CV_32F, 1, 0, ksize=ksize, borderType=cv2.BORDER_REFLECT_101)
    gy = cv2.Sobel(src, cv2.CV_32F, 0, 1, ksize=ksize, borderType=cv2.BORDER_REFLECT_101)
    mag = cv2.magnitude(gx, gy) / _step_gain(ksize)
    mag = mag.reshape(image.shape)  # cv2 drops a trailing channel axis of size 1
    if image.dtype == np.uint8:
        return np.clip(np.rint(mag), 0, 255).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        return np.clip(np.rint(mag), info.min, info.max).astype(image.dtype)
    return mag.astype(image.dtype, copy=False)


class Sobel(ImageOnlyTransform):
    """Replace the image by its Sobel edge magnitude with probability p (mask untouched)."""

    def __init__(self, ksize: int = 3, p: float = 0.5):
        if isinstance(ksize, bool) or not isinstance(ksize, int) or ksize not in _VALID_KSIZES:
            raise ValueError(f"ksize must be one of {_VALID_KSIZES}, got {ksize!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a number in [0, 1], got {p!r}")
        super().__init__(p=p)
        self.ksize = ksize

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return sobel_magnitude(img, self.ksize)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        # lets albumentations serialize/repr the transform with its parameters
        return ("ksize",)
