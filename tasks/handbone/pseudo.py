"""Pseudo-labels: the model's confident test-set predictions written back in the competition's training layout.

`DIR/train/DCM/IDxxx/<name>.png` (a hard link to the test image, or a copy across file systems) and
`DIR/train/outputs_json/IDxxx/<name>.json` (one polygon per predicted class, in the competition's JSON schema), so
`tasks.handbone.reader.scan_split(DIR, "train")` reads a pseudo-label folder like the real training set.

- A class's polygon is the outer contour of the largest 8-connected component of its thresholded mask, traced
  through the mask's own boundary pixels. `cv2.fillPoly` (and so `tasks.handbone.reader.rasterize`) fills polygon edges
  inclusively, so filling the polygon gives back exactly that component with its holes filled; smaller components
  are dropped. A class with no component of at least 3 contour points gets no annotation.
- Confidence of an image (`confidence`): the mean over all classes and pixels of max(p, 1 - p), in [0.5, 1]. It is
  1 where every pixel is predicted 0 or 1 with certainty and 0.5 where every probability is 0.5. Most pixels of
  most classes are confidently background, so useful cut-offs sit close to 1; `DIR/pseudo_labels.json` records
  every image's value to choose one from.
- The folder is built as `DIR.tmp-XXXX` next to DIR and renamed at the end: a failed run never leaves a
  complete-looking DIR. An existing non-empty DIR is refused. When no image is kept, nothing is written. A failed
  write (a full or read-only disk, a file in the way) is one line naming the file as it would be called in DIR.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from modes.fullsize import FullSizeProbs
from tasks.handbone.reader import ANNOTATION_DIR, IMAGE_DIR, Sample
from utils.files import atomic_folder, check_new_folder, check_output_folder, make_folder, write_error

MANIFEST = "pseudo_labels.json"


def mask_to_polygon(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray | None:
    """(H, W) mask -> (N, 2) int32 [x, y] points of its largest component's outer contour, or None when empty.

    The points are the centres of the component's boundary pixels (cv2.CHAIN_APPROX_SIMPLE, which only drops
    points in the middle of straight horizontal, vertical and diagonal runs, so filling is unchanged). None also for
    a component whose contour has fewer than 3 points (one or two pixels, or a straight line): `read_polygons`
    would skip such a polygon. `offset`: (top, left) of `mask` in the image when it is a crop of the full mask.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygon expects an (H, W) mask, got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = np.ascontiguousarray(mask[y0:y1, x0:x1] != 0, dtype=np.uint8)
    y0, x0 = y0 + offset[0], x0 + offset[1]
    count, labels, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    if count > 2:  # keep the largest component (label 0 is the background)
        crop = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(int(x0), int(y0)))
    points = max(contours, key=len).reshape(-1, 2).astype(np.int32)
    return points if len(points) >= 3 else None


def annotation_json(polygons: dict[str, np.ndarray], stem: str, parent: str, height: int, width: int) -> dict:
    """The competition's annotation record for one image: one `poly_seg` annotation per class in `polygons`.

    `parent` is the image's `parent_path` ("/train/DCM/IDxxx"); `filename` is `<stem>.jpg` as in the real data
    (readers pair files by stem and ignore it); `metadata` holds the PNG's own size. Ids are UUIDs derived from
    the image and class, so a rerun writes identical files.
    """
    def uid(*parts: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "pseudo-label:" + "/".join(parts)))

    return {
        "annotations": [
            {"id": uid(parent, stem, label), "type": "poly_seg", "attributes": {},
             "points": np.asarray(points).reshape(-1, 2).astype(int).tolist(), "label": label}
            for label, points in polygons.items()
        ],
        "attributes": {},
        "file_id": uid(parent, stem),
        "filename": f"{stem}.jpg",
        "parent_path": parent,
        "last_modifier_id": uid("pseudo_label.py"),
        "metadata": {"height": int(height), "width": int(width)},
        "last_workers": {},
    }


def confidence(probs) -> float:
    """Mean over classes and pixels of max(p, 1 - p) for (C, H, W) probabilities (a tensor or an array).

    Computed as 0.5 + mean |p - 0.5|, accumulated in float64.
    """
    if isinstance(probs, np.ndarray):
        return 0.5 + float(np.abs(probs.astype(np.float32) - 0.5).mean(dtype=np.float64))
    import torch

    return 0.5 + float((probs.float() - 0.5).abs_().mean(dtype=torch.float64))


@dataclass
class PseudoReport:
    """What `write_pseudo_labels` did: per-image confidence, kept and skipped keys, classes without a polygon."""
    out: Path
    written: bool = False  # False when no image was kept: nothing was created
    confidences: dict[str, float] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    empty: dict[str, list[str]] = field(default_factory=dict)  # kept image -> classes with no annotation
    linked: int = 0  # PNGs hard-linked (the others were copied)

    @property
    def empty_count(self) -> int:
        return sum(len(v) for v in self.empty.values())


def write_pseudo_labels(predictions: Iterable[tuple[Sample, object]], out: str | Path, classes: list[str],
                        threshold: float = 0.5, min_confidence: float = 0.9,
                        info: dict | None = None) -> PseudoReport:
    """Write a pseudo-label folder from (test sample, full-size probabilities) pairs: modes.fullsize's
    FullSizeProbs (as trainer.inference.iter_full_size_probs yields them) or (C, H, W) tensors / arrays.

    Images with `confidence(probs) < min_confidence` are skipped; a kept image's masks are `probs > threshold`
    (as in the submission). Besides the training layout, `DIR/pseudo_labels.json` records the settings, `info`
    (e.g. checkpoints and weights) and every image's confidence. Returns a PseudoReport; when no image is kept,
    nothing is written and `report.written` is False.
    """
    out = check_new_folder(check_output_folder(out))
    make_folder(out.parent)
    report = PseudoReport(out)
    tmp = None
    try:
        with atomic_folder(out) as tmp:
            _fill(tmp, predictions, classes, threshold, min_confidence, report)
            if not report.kept:
                shutil.rmtree(tmp)  # commits nothing
                return report
            manifest = {"classes": classes, "threshold": threshold, "min_confidence": min_confidence, **(info or {}),
                        "kept": report.kept, "skipped": report.skipped, "empty_classes": report.empty,
                        "confidence": report.confidences}
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            check_new_folder(out)  # nothing appeared there meanwhile
    except OSError as e:  # a full or read-only disk: name the file as it would have been called in DIR
        where = out
        if tmp is not None and e.filename and Path(e.filename).is_relative_to(tmp):
            where = out / Path(e.filename).relative_to(tmp)
        raise write_error(where, e) from None
    report.written = True
    return report


def _fill(tmp: Path, predictions, classes: list[str], threshold: float, min_confidence: float,
          report: PseudoReport) -> None:
    """Write the kept images of `predictions` into `tmp`, recording each image's fate in `report`."""
    for sample, probs in predictions:
        if not isinstance(probs, FullSizeProbs):
            probs = FullSizeProbs.of(probs)
        if probs.num_classes != len(classes):
            raise ValueError(f"{sample.key}: {probs.num_classes} probability maps for {len(classes)} classes")
        score = probs.confidence()
        report.confidences[sample.key] = score
        if score < min_confidence:
            report.skipped.append(sample.key)
            continue
        polygons, empty = {}, []
        for name, item in zip(classes, probs.masks(threshold)):
            points = None if item is None else mask_to_polygon(_to_numpy(item[1]), (item[0][0], item[0][2]))
            if points is None:
                empty.append(name)
            else:
                polygons[name] = points
        report.linked += _write_sample(tmp, sample, polygons, probs.size)
        report.kept.append(sample.key)
        if empty:
            report.empty[sample.key] = empty


def _to_numpy(masks) -> np.ndarray:
    masks = masks if isinstance(masks, np.ndarray) else masks.to("cpu").numpy()
    return masks.view(np.uint8) if masks.dtype == bool else masks.astype(np.uint8)


def _write_sample(root: Path, sample: Sample, polygons: dict[str, np.ndarray], hw) -> bool:
    """Link (or copy) the PNG and write its JSON; True when the PNG was hard-linked."""
    group, name = Path(sample.key).parent.as_posix(), Path(sample.key).name
    stem = Path(name).stem
    image_dir = root / "train" / IMAGE_DIR / group
    json_dir = root / "train" / ANNOTATION_DIR / group
    image_dir.mkdir(parents=True, exist_ok=True)
    json_dir.mkdir(parents=True, exist_ok=True)
    target = image_dir / name
    try:
        os.link(sample.image, target)
        linked = True
    except OSError:
        shutil.copy2(sample.image, target)
        linked = False
    record = annotation_json(polygons, stem, f"/train/{IMAGE_DIR}/{group}", int(hw[0]), int(hw[1]))
    (json_dir / f"{stem}.json").write_text(json.dumps(record), encoding="utf-8")
    return linked
