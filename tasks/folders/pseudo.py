"""Pseudo-labels of a folders task: the confident test predictions written as a flat folders set, `DIR/images/`
(hard links to the test images, or copies across file systems) and `DIR/masks/<stem>.png` (multilabel:
`DIR/masks/<class>/<stem>.png`) in the set's own mask encoding, plus `DIR/pseudo_labels.json` (settings and every
image's confidence). Train on it with `data.pseudo_roots: [DIR]`.

Confidence of an image: label maps, the mean over pixels of the winning class's probability; binary and
multilabel masks, the mean over classes and pixels of max(p, 1 - p) (modes.fullsize.FullSizeProbs.confidence).
The folder is built under a temporary name and renamed at the end; when no image is kept nothing is written.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from modes.multiclass import dense_probs
from tasks.folders.reader import write_mask
from utils.files import atomic_folder, check_new_folder, write_error

MANIFEST = "pseudo_labels.json"


@dataclass
class PseudoReport:
    out: Path
    written: bool = False
    confidences: dict[str, float] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    empty: dict[str, list[str]] = field(default_factory=dict)  # kept image -> classes predicted nowhere (masks)
    linked: int = 0

    @property
    def empty_count(self) -> int:
        return sum(len(v) for v in self.empty.values())


def write_pseudo_folder(predictions: Iterable, out, layout, threshold: float, min_confidence: float,
                        info: dict) -> PseudoReport:
    """`predictions` yields (test sample, FullSizeProbs); `layout` (tasks.folders.layout) names the classes and
    mode. Images at or above `min_confidence` are written."""
    out = check_new_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = PseudoReport(out)
    try:
        return _write(predictions, out, layout, threshold, min_confidence, info, report)
    except OSError as e:  # a full or read-only disk: the temporary folder is gone already
        raise write_error(out, e) from None


def _write(predictions, out: Path, layout, threshold, min_confidence, info, report: PseudoReport) -> PseudoReport:
    label_map, classes = layout.label_kind == "map", layout.classes
    with atomic_folder(out) as tmp:
        for sample, probs in predictions:
            if label_map:
                top, labels = dense_probs(probs).max(0)
                score, masks = float(top.mean(dtype=torch.float64)), [labels.to(torch.uint8).cpu().numpy()]
            else:
                score, masks = probs.confidence(), _planes(probs, threshold)
            report.confidences[sample.key] = round(score, 6)
            if score < min_confidence:
                report.skipped.append(sample.key)
                continue
            report.kept.append(sample.key)
            report.linked += _link(sample.image, tmp / "images" / (sample.key + _suffix(sample.image)))
            if not label_map:
                empty = [name for name, plane in zip(classes, masks) if not plane.any()]
                if empty:
                    report.empty[sample.key] = empty
            names = ([f"{name}/{sample.key}.png" for name in classes] if layout.mode == "multilabel"
                     else [f"{sample.key}.png"])
            for name, plane in zip(names, masks):
                write_mask(tmp / "masks" / name, plane, sample.encoding, layout.settings.palette)
        if not report.kept:
            shutil.rmtree(tmp)  # commits nothing
            return report
        manifest = {"classes": classes, "mode": layout.mode, "threshold": threshold, "min_confidence": min_confidence,
                    **info, "kept": report.kept, "skipped": report.skipped, "confidence": report.confidences}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        check_new_folder(out)  # nothing appeared there meanwhile
    report.written = True
    return report


def _planes(probs, threshold: float) -> np.ndarray:
    """(C, H, W) uint8 0/1 masks `p > threshold`, filled from the boxes where they can be positive."""
    planes = np.zeros((probs.num_classes, *probs.size), np.uint8)
    for plane, item in zip(planes, probs.masks(threshold)):
        if item is not None:
            (r0, r1, c0, c1), crop = item
            plane[r0:r1, c0:c1] = crop.cpu().numpy()
    return planes


def _suffix(path: Path) -> str:
    return path.suffix.lower() or ".png"


def _link(source: Path, target: Path) -> bool:
    """Hard-link (or copy) a test image into the pseudo-label set; True when linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return True
    except OSError:
        shutil.copy2(source, target)
        return False
