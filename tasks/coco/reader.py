"""COCO-format datasets (the recycling-trash competition layout): `ROOT/{train_all,train,val,test}.json`, images at
the JSON's `file_name` relative to ROOT.

One label per pixel: 0 is the background, category `name` gets the index of that name in `task.classes` (whose
first entry names the background). The label map of an image paints its annotations in order of decreasing area,
so a smaller object lying on a larger one wins where they overlap. Polygons (one or several rings per object) and
RLE (compressed or not) are decoded by pycocotools, the reference implementation of COCO's `annToMask`.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from utils.errors import DataError

SPLIT_FILES = {"train_all": "train_all.json", "train": "train.json", "val": "val.json", "test": "test.json"}


@dataclass(frozen=True)
class CocoObject:
    """One annotation, validated: its label (index into task.classes) and segmentation as a pycocotools RLE."""
    id: int
    label: int
    rle: dict


@dataclass(frozen=True)
class CocoSample:
    key: str  # the JSON's file_name: unique, the submission's image_id
    image: Path
    image_id: int
    height: int
    width: int
    objects: tuple[CocoObject, ...]
    annotation: Path | None  # the JSON the labels come from (None for test images): part of the cache key
    group: str  # for compatibility with group-aware code: every image is its own group

    @property
    def labels(self) -> set[int]:
        return {o.label for o in self.objects}


@dataclass
class CocoSet:
    samples: list[CocoSample]
    warnings: list[str]


def read_coco_json(path: Path, kind: str = "COCO") -> dict:
    """The parsed JSON with its 'images' list checked; `kind` names the file in the error (COCO, test)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {kind} JSON not found") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a valid JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO JSON (no 'images' list)")
    return data


def read_coco(path: str | Path, root: str | Path, classes: list[str], labelled: bool = True) -> CocoSet:
    """Read and validate one COCO JSON: one sample per image (in the JSON's order), objects decoded to RLE.

    Errors (one line naming the file and the id): not COCO, an image missing on disk, a category id that is not
    among the categories, a category name not in `classes`. Counted warnings (the object or ring is skipped): an
    empty segmentation, a polygon ring of fewer than 3 points.
    """
    path, root = Path(path), Path(root)
    data = read_coco_json(path)
    if not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: not a COCO JSON (no 'categories' list)")
    label_of = _category_labels(path, data["categories"], classes)
    images = _images(path, root, data["images"])
    objects: dict[int, list[CocoObject]] = {image_id: [] for image_id in images}
    warnings: list[str] = []
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise DataError(f"{path}: 'annotations' is not a list")
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotation #{n} is not an object")
        ann_id = ann.get("id", f"#{n}")
        image_id = ann.get("image_id")
        if image_id not in images:
            raise DataError(f"{path}: annotation {ann_id} refers to image_id {image_id!r}, which is not in 'images'")
        category = ann.get("category_id")
        if category not in label_of:
            raise DataError(f"{path}: annotation {ann_id} has category_id {category!r}, not among the categories "
                            f"({', '.join(map(str, sorted(label_of)))})")
        _, height, width = images[image_id]
        rle, problem = _to_rle(ann.get("segmentation"), height, width)
        if problem:
            warnings.append(f"{path}: annotation {ann_id} (image {image_id}): {problem}")
        if rle is not None:
            objects[image_id].append(CocoObject(int(ann_id) if isinstance(ann_id, int) else n, label_of[category], rle))
    samples = [CocoSample(key=file_name, image=root / file_name, image_id=image_id, height=h, width=w,
                          objects=tuple(objects[image_id]), annotation=path if labelled else None, group=file_name)
               for image_id, (file_name, h, w) in images.items()]
    return CocoSet(samples, warnings)


def _category_labels(path: Path, categories: list, classes: list[str]) -> dict[int, int]:
    """category id -> label (index of its name in task.classes)."""
    index = {name: i for i, name in enumerate(classes)}
    out = {}
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{path}: a category without 'id' and 'name': {str(cat)[:80]}")
        if cat["name"] not in index or index[cat["name"]] == 0:
            raise DataError(f"{path}: category {cat['id']} {cat['name']!r} is not in task.classes[1:] "
                            f"({', '.join(classes[1:])})")
        out[cat["id"]] = index[cat["name"]]
    return out


def _images(path: Path, root: Path, records: list) -> dict[int, tuple[str, int, int]]:
    """image id -> (file_name, height, width); every image must exist on disk."""
    images: dict[int, tuple[str, int, int]] = {}
    for n, im in enumerate(records):
        try:
            image_id, file_name = im["id"], im["file_name"]
            height, width = int(im["height"]), int(im["width"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{path}: image #{n} lacks id, file_name, height or width") from None
        if image_id in images:
            raise DataError(f"{path}: image id {image_id} is listed twice")
        if not (root / file_name).is_file():
            raise DataError(f"{path}: image {image_id} file {root / file_name} not found")
        images[image_id] = (file_name, height, width)
    return images


def _to_rle(segmentation, height: int, width: int) -> tuple[dict | None, str | None]:
    """A compressed RLE of any COCO segmentation, and a problem to warn about (None when fine)."""
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if list(size or ()) != [height, width]:
            return None, f"RLE size {size} differs from the image's {height}x{width}, skipped"
        rle = segmentation
        if isinstance(rle["counts"], list):
            rle = mask_utils.frPyObjects(rle, height, width)
        elif isinstance(rle["counts"], str):
            rle = {"size": size, "counts": rle["counts"].encode("ascii")}
        if mask_utils.area(rle) == 0:
            return None, "empty segmentation, skipped"
        return rle, None
    if not isinstance(segmentation, list) or not segmentation:
        return None, "empty segmentation, skipped"
    rings, dropped = [], 0
    for ring in segmentation:
        if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
            dropped += 1
            continue
        rings.append([float(v) for v in ring])
    problem = f"{dropped} polygon ring(s) of fewer than 3 points skipped" if dropped else None
    if not rings:
        return None, "polygon of fewer than 3 points, skipped"
    rle = mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
    return rle, problem


def label_map(sample: CocoSample, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) uint8 labels, objects painted in decreasing area (smaller on top); resized by nearest to `size`."""
    labels = np.zeros((sample.height, sample.width), np.uint8)
    for obj in sorted(sample.objects, key=lambda o: -float(mask_utils.area(o.rle))):
        labels[decode_rle(obj.rle).astype(bool)] = obj.label
    if size is not None and tuple(size) != labels.shape:
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return labels


def decode_rle(rle: dict) -> np.ndarray:
    """(H, W) uint8 mask of a compressed RLE. pycocotools 2.0.x warns on every decode under numpy 2 (its Cython
    array wrapper predates the `copy` keyword); the result is correct, so only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*copy keyword.*")
        return mask_utils.decode(rle)


def class_presence(samples: list[CocoSample], num_classes: int) -> np.ndarray:
    """(N, C) 0/1: which labels each image holds (background excluded: every image has some)."""
    presence = np.zeros((len(samples), num_classes), np.uint8)
    for i, s in enumerate(samples):
        for label in s.labels:
            presence[i, label] = 1
    return presence


def split_path(root: str | Path, split: str) -> Path:
    return Path(root) / SPLIT_FILES[split]
