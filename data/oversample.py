"""Oversampling of training images that hold rare classes (`data.oversample`), as the trash team did.

Each training image is repeated by the largest factor among the classes it holds (1 for none): factors come from
`factors` ({class name: factor}) or, with `inverse_frequency`, from (images of the most frequent class) / (images
of the class), capped at `max_factor`. A fractional factor repeats an image once more with that probability,
drawn once from the seed, so the epoch length is fixed for a run.
"""
from __future__ import annotations

import numpy as np

from utils.errors import ConfigError


def class_factors(presence: np.ndarray, classes: list[str], factors: dict, inverse_frequency: bool,
                  max_factor: float) -> np.ndarray:
    """(C,) repeat factor per class (background: 1)."""
    out = np.ones(len(classes))
    if inverse_frequency:
        counts = presence[:, 1:].sum(0).astype(np.float64)
        seen = counts > 0
        if seen.any():
            out[1:][seen] = np.minimum(counts.max() / counts[seen], max_factor)
    index = {name: i for i, name in enumerate(classes)}
    for name, factor in factors.items():
        if name not in index:
            raise ConfigError(f"data.oversample.factors: unknown class {name!r} (task.classes: {', '.join(classes)})")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
            raise ConfigError(f"data.oversample.factors.{name}: must be a number >= 1, got {factor!r}")
        out[index[name]] = float(factor)
    return out


def oversample_indices(indices: np.ndarray, presence: np.ndarray, factors: np.ndarray, seed: int) -> np.ndarray:
    """Training indices with each image repeated by its factor; `presence` is indexed like the dataset."""
    indices = np.asarray(indices, dtype=np.int64)
    per_image = np.where(presence[indices] > 0, factors[None, :], 1.0).max(1)
    whole = np.floor(per_image).astype(np.int64)
    extra = np.random.default_rng(seed).random(len(indices)) < per_image - whole
    return np.repeat(indices, whole + extra)
