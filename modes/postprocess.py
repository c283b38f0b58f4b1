"""Post-processing of predicted masks, per class (`predict.postprocess`, or a selection plan): keep the largest
connected component, remove connected components smaller than N pixels, fill holes.

Components are 8-connected (OpenCV's connectedComponentsWithStats: areas in one pass), holes are the background
regions, 4-connected, that do not reach the image border (scipy.ndimage.binary_fill_holes): the two connectivities
are each other's duals, so a diagonal gap never both joins two components and opens a hole. Components are removed
first, then holes filled.

- Multilabel (a mask per class): applied to each class's mask where the full-size path computed it, the box crop
  of `modes.fullsize` (see `Postprocess.mask` for why a crop gives the full image's answer).
- Multiclass (one label map): applied to each object class in class order; removed pixels become the background
  (label 0), and holes are filled only where the label map is background. Background, not the second-best class:
  a removed blob is almost always a false object on background, the rule needs no probabilities (so the same call
  serves any label map), and a filled hole never overwrites another object lying inside it.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from utils.config import PostprocessOps

ALL = "all"  # the key of predict.postprocess that applies to every class without its own entry


def is_active(ops: PostprocessOps | None) -> bool:
    return ops is not None and (ops.largest_component or ops.min_size > 1 or ops.fill_holes)


def describe(ops: PostprocessOps | None) -> str:
    """Short words for a table: 'largest component + fill holes', 'remove < 64 px', 'none'."""
    if not is_active(ops):
        return "none"
    words = []
    if ops.min_size > 1:
        words.append(f"remove < {ops.min_size} px")
    if ops.largest_component:
        words.append("largest component")
    if ops.fill_holes:
        words.append("fill holes")
    return " + ".join(words)


def as_dict(ops: PostprocessOps) -> dict:
    """The operations that are on, as predict.postprocess writes them."""
    out = {}
    if ops.largest_component:
        out["largest_component"] = True
    if ops.min_size > 1:
        out["min_size"] = int(ops.min_size)
    if ops.fill_holes:
        out["fill_holes"] = True
    return out


def clean_mask(mask: np.ndarray, ops: PostprocessOps) -> np.ndarray:
    """One class's 2-D bool mask after `ops` (a new array; the input is left alone)."""
    out = np.ascontiguousarray(mask, dtype=bool)
    if (ops.largest_component or ops.min_size > 1) and out.any():
        _, labels, stats, _ = cv2.connectedComponentsWithStats(out.view(np.uint8), connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA].copy()
        keep = areas >= max(ops.min_size, 1)
        keep[0] = False  # label 0: the background
        if ops.largest_component and keep[1:].any():
            largest = int(np.argmax(np.where(keep, areas, -1)))
            keep[:] = False
            keep[largest] = True
        out = keep[labels]
    if ops.fill_holes and out.any():
        out = ndimage.binary_fill_holes(out)
    return out


class Postprocess:
    """Per class, the operations to apply (None: the mask stays as predicted)."""

    def __init__(self, per_class: list[PostprocessOps | None]):
        self.per_class = [ops if is_active(ops) else None for ops in per_class]

    @classmethod
    def build(cls, spec: dict | None, classes: list[str], multiclass: bool = False) -> Postprocess | None:
        """From a checked predict.postprocess mapping ({class or 'all': PostprocessOps}): a class's own entry
        replaces 'all' for that class; in multiclass mode the background (the first class) is never processed.
        None when nothing is to be done."""
        if not spec:
            return None
        default = spec.get(ALL)
        per_class = [spec.get(c, default) for c in classes]
        if multiclass:
            per_class[0] = None
        out = cls(per_class)
        return out if any(out.per_class) else None

    def __bool__(self) -> bool:
        return any(self.per_class)

    def mask(self, c: int, crop: np.ndarray) -> np.ndarray:
        """Class c's mask, given as a crop outside which the full-size mask is empty (the box of modes.fullsize).

        The crop gives exactly the full image's result. Components: every foreground pixel lies in the crop, so no
        component continues outside it. Holes: a background region of the crop that touches the crop's border
        continues into the background outside the box, and every pixel outside the box reaches the image border
        by a straight line that stays outside the box (straight up, down, left or right away from it), so that
        region is not a hole in the full image either, and binary_fill_holes on the crop does not fill it; a
        region that does not touch the crop's border is enclosed in both. Filling adds pixels inside the crop only.
        """
        ops = self.per_class[c]
        return crop if ops is None else clean_mask(crop, ops)

    def labels(self, labels: np.ndarray) -> np.ndarray:
        """An (H, W) label map after each class's operations, in class order (a new array)."""
        out = np.array(labels, copy=True)
        for c, ops in enumerate(self.per_class):
            if ops is None:
                continue
            own = out == c
            if not own.any():
                continue
            kept = clean_mask(own, PostprocessOps(ops.largest_component, ops.min_size, False))
            out[own & ~kept] = 0
            if ops.fill_holes:
                out[ndimage.binary_fill_holes(kept) & (out == 0)] = c
        return out
