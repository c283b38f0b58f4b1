"""Copy-paste augmentation for multi-class label maps: objects of chosen (rare) classes are cut from other training
images by their masks and pasted, at a random place, into the current one; the label map is updated under the
pasted pixels, so labels stay consistent with pixels (a pasted object hides what it covers).

An object is one 8-connected component of a class in the donor's label map. Hand-written because the maintained
augmentation libraries (albumentations, kornia) have no copy-paste for semantic label maps.
"""
from __future__ import annotations

import cv2
import numpy as np


class CopyPaste:
    """`donors(i)` returns (image (H, W, 3), labels (H, W)) of training image i; `donor_indices` hold the classes."""

    def __init__(self, labels: list[int], donor_indices: dict[int, np.ndarray], donors, p: float = 0.5,
                 max_objects: int = 2):
        self.labels = [c for c in labels if len(donor_indices.get(c, ())) > 0]
        self.donor_indices = donor_indices
        self.donors = donors
        self.p = p
        self.max_objects = max_objects

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
        if not self.labels or rng.random() >= self.p:
            return image, labels
        image, labels = image.copy(), labels.copy()
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            cls = self.labels[int(rng.integers(len(self.labels)))]
            donor = self.donor_indices[cls][int(rng.integers(len(self.donor_indices[cls])))]
            donor_image, donor_labels = self.donors(int(donor))
            paste_object(image, labels, donor_image, donor_labels, cls, rng)
        return image, labels


def paste_object(image: np.ndarray, labels: np.ndarray, donor_image: np.ndarray, donor_labels: np.ndarray,
                 cls: int, rng: np.random.Generator) -> bool:
    """Paste one random component of class `cls` from the donor into (image, labels), in place, at a random
    position where it fits (flipped horizontally half of the time). False when the donor has none that fits."""
    count, components = cv2.connectedComponents((donor_labels == cls).astype(np.uint8), connectivity=8)
    if count < 2:
        return False
    ys, xs = np.nonzero(components == int(rng.integers(1, count)))
    h, w = labels.shape
    y0, x0 = ys.min(), xs.min()
    oh, ow = ys.max() - y0 + 1, xs.max() - x0 + 1
    if oh > h or ow > w:
        return False
    src_y, src_x = ys, xs
    dst_x = xs - x0
    if rng.random() < 0.5:
        dst_x = ow - 1 - dst_x
    ty, tx = int(rng.integers(0, h - oh + 1)), int(rng.integers(0, w - ow + 1))
    dst_y, dst_x = ys - y0 + ty, dst_x + tx
    image[dst_y, dst_x] = donor_image[src_y, src_x]
    labels[dst_y, dst_x] = cls
    return True


class CacheDonors:
    """Picklable donor access for DataLoader workers: (image, label map) of cached training image i."""

    def __init__(self, cache):
        self.cache = cache

    def __call__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.cache.image(i), self.cache.labels(i)


def build_copy_paste(cfg, classes: list[str], cache, train_indices) -> CopyPaste | None:
    """The configured copy-paste (`transforms.copy_paste`) with donors among the training images, or None."""
    if cfg is None:
        return None
    labels = [classes.index(name) for name in cfg.classes]
    presence = cache.class_presence()
    train = np.unique(np.asarray(train_indices, dtype=np.int64))
    donors = {c: train[presence[train, c] > 0] for c in labels}
    return CopyPaste(labels, donors, CacheDonors(cache), cfg.p, cfg.max_objects)
