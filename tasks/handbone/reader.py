"""The hand-bone competition layout: `ROOT/{train,test}/DCM/IDxxx/<name>.png` and
`ROOT/train/outputs_json/IDxxx/<name>.json`.

Images and annotations are paired by ID folder and file stem, never by the JSON's `filename` field (it names a .jpg
of another size in the real data). Polygons are integer pixel coordinates of the PNG.
"""
from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.errors import DataError

IMAGE_DIR = "DCM"
ANNOTATION_DIR = "outputs_json"
META_FILES = ("meta_data.xlsx", "meta_data.csv")


@dataclass(frozen=True)
class Sample:
    key: str  # "IDxxx/name.png": unique, sortable, the submission order
    image: Path
    annotation: Path | None  # None for test images
    group: str  # the ID folder: one person, both hands


def scan_split(root: str | Path, split: str) -> list[Sample]:
    """List the samples of `train` (with annotations, paired by stem) or `test` (images only)."""
    root = Path(root)
    image_root = root / split / IMAGE_DIR
    if not image_root.is_dir():
        raise DataError(f"{image_root}: {split} image folder not found (expected ROOT/{split}/{IMAGE_DIR}/IDxxx/*.png)")
    images = {p.relative_to(image_root).with_suffix("").as_posix(): p for p in _files(image_root, ".png")}
    _warn_skipped(image_root, set(images.values()), split)
    if not images:
        raise DataError(f"{image_root}: no PNG images in its ID folders")
    annotations: dict[str, Path] = {}
    if split == "train":
        ann_root = root / split / ANNOTATION_DIR
        if not ann_root.is_dir():
            raise DataError(f"{ann_root}: annotation folder not found")
        annotations = {p.relative_to(ann_root).with_suffix("").as_posix(): p for p in _files(ann_root, ".json")}
        for stem in sorted(set(annotations) - set(images)):
            raise DataError(f"{annotations[stem]}: annotation without an image (expected {image_root / stem}.png)")
        for stem in sorted(set(images) - set(annotations)):
            raise DataError(f"{images[stem]}: image without an annotation (expected {ann_root / stem}.json)")
    return [Sample(key=images[stem].relative_to(image_root).as_posix(), image=images[stem],
                   annotation=annotations.get(stem), group=stem.split("/")[0])
            for stem in sorted(images)]


def _warn_skipped(image_root: Path, taken: set[Path], split: str, listed: int = 5) -> None:
    """Name the files under the image folder that are not read (not a PNG one level down, in an ID folder):
    inference, --check and hard voting all see exactly the listed images, so nothing is left out silently."""
    skipped = sorted(p for p in image_root.rglob("*") if p.is_file() and p not in taken and not p.name.startswith("."))
    if skipped:
        names = ", ".join(p.relative_to(image_root).as_posix() for p in skipped[:listed])
        more = f" and {len(skipped) - listed} more" if len(skipped) > listed else ""
        print(f"warning: {image_root}: skipped {len(skipped)} file(s) that are not PNG images in an ID folder "
              f"({split}/{IMAGE_DIR}/IDxxx/<name>.png): {names}{more}", file=sys.stderr)


def _files(folder: Path, suffix: str) -> list[Path]:
    """Files in the ID sub-folders (one level down, as in the competition layout)."""
    return sorted(p for p in folder.glob("*/*") if p.is_file() and p.suffix.lower() == suffix)


def read_polygons(path: Path, classes: list[str], height: int, width: int
                  ) -> tuple[list[tuple[int, np.ndarray]], list[str]]:
    """Parse an annotation JSON into (class index, points (N, 2) float32) pairs.

    Returns the polygons and warnings for what training can go on without, each naming the file and annotation,
    skipped and counted: a polygon of fewer than 3 points, a NaN, infinite or beyond-float coordinate, an annotation
    that is not an object, a label that is not a string, a bone annotated twice (the first is kept); points outside
    the image are clipped. An unknown label or a broken file (no list of annotations, arrays nested too deeply) is an
    error.
    """
    try:
        data = json.loads(path.read_text())
        annotations = data["annotations"]
    except RecursionError:  # arrays nested deeper than Python's recursion limit
        raise DataError(f"{path}: not a valid annotation JSON (nested too deeply)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a valid annotation JSON ({type(e).__name__}: {e})") from None
    if not isinstance(annotations, list):
        raise DataError(f"{path}: 'annotations' must be a list of objects, got {type(annotations).__name__}")
    index = {name: i for i, name in enumerate(classes)}
    polygons, warnings, seen = [], [], {}
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            warnings.append(f"{path}: skipped annotation {n}: not an object ({type(ann).__name__})")
            continue
        label = ann.get("label")
        if not isinstance(label, str):
            warnings.append(f"{path}: skipped annotation {n}: label {label!r} is not a string")
            continue
        if label not in index:
            raise DataError(f"{path}: annotation {n} has unknown class label {label!r}")
        if label in seen:
            warnings.append(f"{path}: skipped annotation {n} ({label}): the bone is already annotated by "
                            f"annotation {seen[label]}")
            continue
        try:
            with np.errstate(over="ignore"):  # 1e300 becomes inf, refused just below
                points = np.asarray(ann["points"], dtype=np.float32).reshape(-1, 2)
        except OverflowError:  # an integer beyond float range (JSON has no limit on digits)
            warnings.append(f"{path}: skipped annotation {n} ({label}): a coordinate beyond float range")
            continue
        except (KeyError, ValueError, TypeError, RecursionError):  # RecursionError: nested lists, deeply
            raise DataError(f"{path}: annotation {n} ({label}) has malformed points") from None
        if not np.isfinite(points).all():  # JSON NaN, Infinity, or 1e300 (inf in float32)
            warnings.append(f"{path}: skipped annotation {n} ({label}): NaN or infinite coordinates")
            continue
        seen[label] = n
        if len(points) < 3:
            warnings.append(f"{path}: skipped polygon {n} ({label}) with {len(points)} point(s)")
            continue
        outside = (points[:, 0] < 0) | (points[:, 0] > width - 1) | (points[:, 1] < 0) | (points[:, 1] > height - 1)
        if outside.any():
            warnings.append(f"{path}: clipped {int(outside.sum())} point(s) of {label} outside the "
                            f"{width}x{height} image")
            points[:, 0] = points[:, 0].clip(0, width - 1)
            points[:, 1] = points[:, 1].clip(0, height - 1)
        polygons.append((index[label], points))
    return polygons, warnings


_SHIFT = 4  # fractional bits for cv2.fillPoly, so scaled polygons keep sub-pixel precision


def rasterize(polygons: list[tuple[int, np.ndarray]], num_classes: int, src_hw: tuple[int, int],
              dst_hw: tuple[int, int]) -> np.ndarray:
    """Fill each polygon into its own class plane at the destination size: (C, H, W) uint8, overlaps kept.

    Scaling the polygon instead of resizing a full-size mask costs a fraction of the time and gives the same
    pixels at the original size (scale 1 is exactly cv2.fillPoly on the integer points).
    """
    masks = np.zeros((num_classes, *dst_hw), dtype=np.uint8)
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    for cls, points in polygons:
        # pixel centres sit at i + 0.5: map centre to centre
        x = (points[:, 0] + 0.5) * sx - 0.5
        y = (points[:, 1] + 0.5) * sy - 0.5
        fixed = np.round(np.stack([x, y], axis=1) * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(masks[cls], [fixed], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return masks


def read_meta(root: str | Path) -> dict[str, dict]:
    """The optional per-person table (ID, age, sex, weight, height), keyed by ID folder name ("ID001").

    The real file's sex column carries a junk `_x0008_` prefix on some rows; it is stripped.
    """
    root = Path(root)
    path = next((root / f for f in META_FILES if (root / f).is_file()), None)
    if path is None:
        return {}
    try:
        if path.suffix == ".xlsx":
            import openpyxl

            sheet = openpyxl.load_workbook(path, read_only=True, data_only=True).active
            rows = [list(r) for r in sheet.iter_rows(values_only=True)]
        else:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.reader(f))
    except Exception as e:  # openpyxl raises many types for a broken workbook
        raise DataError(f"{path}: unreadable metadata table ({type(e).__name__}: {e})") from None
    if not rows:
        return {}
    fields = ["id", "age", "sex", "weight", "height"]
    meta = {}
    for row in rows[1:]:
        if not row or row[0] in (None, ""):
            continue
        record = dict(zip(fields, row))
        try:
            person = f"ID{int(float(record['id'])):03d}"
        except ValueError:
            raise DataError(f"{path}: ID {record['id']!r} is not a number") from None
        if isinstance(record.get("sex"), str):
            record["sex"] = record["sex"].replace("_x0008_", "").strip()
        meta[person] = record
    return meta
