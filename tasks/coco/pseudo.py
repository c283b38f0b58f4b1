"""Pseudo-labels for COCO-format (multiclass) datasets: confident test predictions written as a COCO JSON of the
competition's schema, whose `file_name`s stay relative to the data root; train on it with
`data.pseudo_roots: [PATH.json]` (the test images are not copied).

- Each 8-connected component of a class in the predicted label map becomes one annotation whose segmentation is
  its outer contour as a polygon that COCO's rasterization fills back into exactly the component's pixels (holes
  are filled; they lie under smaller objects or are background). Area and bbox are the component's.
- Confidence of an image: the mean over pixels of the winning class's probability, in [1/C, 1].
- Written atomically (temporary name, then rename); an existing file is refused; a failed write (a full or
  read-only disk, a file where a folder belongs) is one line naming the file.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from utils.errors import UserError
from utils.files import make_folder, write_text_atomic


def label_map_polygons(labels: np.ndarray, num_classes: int) -> list[tuple[int, list[float], int, list[int]]]:
    """(class, flat [x0, y0, x1, y1, ...] contour, area, [x, y, w, h]) per connected component of each class > 0."""
    out = []
    for cls in range(1, num_classes):
        mask = (labels == cls).astype(np.uint8)
        if not mask.any():
            continue
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for k in range(1, count):
            x, y, w, h, area = (int(v) for v in stats[k])
            component = (components[y:y + h, x:x + w] == k).astype(np.uint8)
            # traced at twice the resolution, the contour runs a quarter pixel inside the component's outline, so
            # COCO's rasterization (a pixel belongs when its centre is inside) gives back exactly its pixels
            double = cv2.resize(component, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(double, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            points = max(contours, key=len).reshape(-1, 2)
            if len(points) < 3:
                continue
            polygon = (points + 0.5) / 2 + (x, y)
            out.append((cls, polygon.reshape(-1).tolist(), area, [x, y, w, h]))
    return out


@dataclass
class PseudoReport:
    kept: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    confidences: dict[str, float] = field(default_factory=dict)
    annotations: int = 0
    written: bool = False
    empty: dict = field(default_factory=dict)  # as the hand-bone report: argmax gives no empty-class problem

    @property
    def empty_count(self) -> int:
        return 0


def write_pseudo_coco(predictions: Iterable, out: str | Path, classes: list[str], min_confidence: float,
                      info: dict) -> PseudoReport:
    """`predictions` yields (sample, (H, W) label map, confidence); images at or above `min_confidence` are
    written with their polygons. Nothing is written when no image is kept."""
    out = Path(out)
    if out.exists():
        raise UserError(f"{out}: already exists; choose a new file for the pseudo-labels")
    report = PseudoReport()
    images, annotations = [], []
    for sample, labels, confidence in predictions:
        report.confidences[sample.key] = round(float(confidence), 6)
        if confidence < min_confidence:
            report.skipped.append(sample.key)
            continue
        report.kept.append(sample.key)
        image_id = len(images)
        h, w = labels.shape
        images.append({"id": image_id, "file_name": sample.key, "height": int(h), "width": int(w)})
        for cls, polygon, area, bbox in label_map_polygons(labels, len(classes)):
            annotations.append({"id": len(annotations), "image_id": image_id, "category_id": cls,
                                "segmentation": [polygon], "area": area, "bbox": bbox, "iscrowd": 0})
    report.annotations = len(annotations)
    if not images:
        return report
    data = {"info": {"description": "pseudo-labels", **info}, "licenses": [], "images": images,
            "categories": [{"id": i, "name": name, "supercategory": name} for i, name in enumerate(classes) if i],
            "annotations": annotations, "confidences": report.confidences}
    make_folder(out.parent)
    write_text_atomic(out, json.dumps(data))
    report.written = True
    return report
