"""DenseCRF post-processing of softmax probabilities (`predict.crf`), from pydensecrf2 (a maintained build of
Krähenbühl's fully connected CRF): unary terms from the probabilities, a Gaussian smoothness kernel and a bilateral
appearance kernel on the RGB image; returns the refined probabilities."""
from __future__ import annotations

import numpy as np


def dense_crf(image: np.ndarray, probs: np.ndarray, iterations: int = 5, gaussian_sxy: float = 3.0,
              gaussian_compat: float = 3.0, bilateral_sxy: float = 50.0, bilateral_srgb: float = 13.0,
              bilateral_compat: float = 5.0) -> np.ndarray:
    """image (H, W, 3) uint8 RGB, probs (C, H, W) float softmax -> (C, H, W) float32 CRF marginals."""
    import pydensecrf.densecrf as dcrf
    from pydensecrf.utils import unary_from_softmax

    c, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"dense_crf: image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.clip(probs, 1e-6, 1.0).astype(np.float32))))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(image, np.uint8),
                             compat=bilateral_compat)
    q = crf.inference(iterations)
    return np.asarray(q, dtype=np.float32).reshape(c, h, w)
