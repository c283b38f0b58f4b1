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
from pathlib import Path, PurePath, PurePosixPath

import cv2
import numpy as np
from PIL import Image
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
    except RecursionError:  # arrays nested deeper than Python's recursion limit
        raise DataError(f"{path}: not a valid JSON file (nested too deeply)") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a valid JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f"{path}: not a COCO JSON (no 'images' list)")
    return data


def read_coco(path: str | Path, root: str | Path, classes: list[str], labelled: bool = True) -> CocoSet:
    """Read and validate one COCO JSON: one sample per image (in the JSON's order), objects decoded to RLE.

    Every value is checked before it reaches pycocotools or a path. Errors (one line naming the file and the id):
    not COCO; an id that is neither an integer nor a string; a file_name that is not a relative path inside ROOT
    or is listed twice; a height or width that is not an integer in 1..MAX_SIDE; an image missing on disk; a
    category id that is not among the categories; a category name not in `classes`; a polygon coordinate that is
    not a number; RLE counts that are not COCO's (a string of its alphabet, or a list of non-negative integers).
    Counted warnings (the object or ring is skipped): an empty segmentation, a polygon ring of fewer than 3
    points, a NaN, infinite or far-out coordinate (more than one image size outside the image: pycocotools would
    allocate memory along the whole edge, or crash), an RLE of another size or whose counts do not cover the image
    exactly (pycocotools would leave the rest of the mask uninitialized).
    """
    path, root = Path(path), Path(root)
    data = read_coco_json(path)
    if not isinstance(data.get("categories"), list):
        raise DataError(f"{path}: not a COCO JSON (no 'categories' list)")
    label_of = _category_labels(path, data["categories"], classes)
    images = _images(path, root, data["images"])
    objects: dict[int | str, list[CocoObject]] = {image_id: [] for image_id in images}
    warnings: list[str] = []
    annotations = data.get("annotations") or []
    if not isinstance(annotations, list):
        raise DataError(f"{path}: 'annotations' is not a list")
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise DataError(f"{path}: annotation #{n} is not an object")
        ann_id = ann.get("id", f"#{n}")
        if not is_id(ann_id):
            raise DataError(f"{path}: annotation #{n} has id {_shown(ann_id)}, expected an integer or a string")
        image_id = ann.get("image_id")
        if not is_id(image_id) or image_id not in images:
            raise DataError(f"{path}: annotation {ann_id} refers to image_id {_shown(image_id)}, which is not in "
                            f"'images'")
        category = ann.get("category_id")
        if not is_id(category) or category not in label_of:
            raise DataError(f"{path}: annotation {ann_id} has category_id {_shown(category)}, not among the "
                            f"categories ({', '.join(map(str, label_of))})")
        _, height, width = images[image_id]
        try:
            rle, problem = _to_rle(ann.get("segmentation"), height, width)
        except ValueError as e:
            raise DataError(f"{path}: annotation {ann_id} (image {image_id}): {e}") from None
        if problem:
            warnings.append(f"{path}: annotation {ann_id} (image {image_id}): {problem}")
        if rle is not None:
            objects[image_id].append(CocoObject(int(ann_id) if isinstance(ann_id, int) else n, label_of[category], rle))
    samples = [CocoSample(key=file_name, image=root / file_name, image_id=image_id, height=h, width=w,
                          objects=tuple(objects[image_id]), annotation=path if labelled else None, group=file_name)
               for image_id, (file_name, h, w) in images.items()]
    return CocoSet(samples, warnings)


def is_id(value) -> bool:
    """COCO ids are integers; strings are accepted too (hashable, and some exporters write them). A float, a
    boolean, null, a list or an object is refused (a list or an object would fail as a dictionary key)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _shown(value, limit: int = 40) -> str:
    """A JSON value in an error message, cut short; an object, or a list that holds lists or objects, as `{...}` or
    `[...]` (it may be nested too deeply for repr)."""
    if isinstance(value, dict):
        return "{...}"
    if isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value):
        return "[...]"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _category_labels(path: Path, categories: list, classes: list[str]) -> dict[int | str, int]:
    """category id -> label (index of its name in task.classes)."""
    index = {name: i for i, name in enumerate(classes)}
    out = {}
    for n, cat in enumerate(categories):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{path}: a category without 'id' and 'name': {str(cat)[:80]}")
        if not is_id(cat["id"]):
            raise DataError(f"{path}: category #{n} has id {_shown(cat['id'])}, expected an integer or a string")
        if cat["id"] in out:
            raise DataError(f"{path}: category id {cat['id']!r} is listed twice")
        if not isinstance(cat["name"], str) or cat["name"] not in index or index[cat["name"]] == 0:
            raise DataError(f"{path}: category {cat['id']} {_shown(cat['name'])} is not in task.classes[1:] "
                            f"({', '.join(classes[1:])})")
        out[cat["id"]] = index[cat["name"]]
    return out


def _images(path: Path, root: Path, records: list) -> dict[int | str, tuple[str, int, int]]:
    """image id -> (file_name, height, width); every image must exist on disk, each file_name once."""
    images: dict[int | str, tuple[str, int, int]] = {}
    owner: dict[str, int | str] = {}
    for n, im in enumerate(records):
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "height", "width")):
            raise DataError(f"{path}: image #{n} lacks id, file_name, height or width")
        image_id = im["id"]
        if not is_id(image_id):
            raise DataError(f"{path}: image #{n} has id {_shown(image_id)}, expected an integer or a string")
        if image_id in images:
            raise DataError(f"{path}: image id {image_id!r} is listed twice")
        file_name = check_file_name(path, image_id, im["file_name"])
        if file_name in owner:
            raise DataError(f"{path}: images {owner[file_name]!r} and {image_id!r} have the same file_name "
                            f"{file_name!r}")
        height, width = (_side(path, image_id, key, im[key]) for key in ("height", "width"))
        if not (root / file_name).is_file():
            raise DataError(f"{path}: image {image_id} file {root / file_name} not found")
        owner[file_name] = image_id
        images[image_id] = (file_name, height, width)
    return images


MAX_SIDE = 32767  # OpenCV's resize refuses larger images


def _side(path: Path, image_id, key: str, value) -> int:
    """An image's height or width: an integer (12.0 is accepted) in 1..MAX_SIDE."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIDE:
        raise DataError(f"{path}: image {image_id} has {key} {_shown(value)}, expected an integer in 1..{MAX_SIDE}")
    return value


def check_file_name(path: Path, image_id, file_name) -> str:
    """A file_name that names a file inside ROOT: a non-empty relative path without '..', so that nothing read or
    written after it (the image, --save-masks PNGs, saved probabilities) leaves its folder."""
    if not isinstance(file_name, str) or not file_name:
        raise DataError(f"{path}: image {image_id} has file_name {_shown(file_name)}, expected a relative path")
    parts = PurePosixPath(file_name.replace("\\", "/")).parts
    if "\0" in file_name or PurePath(file_name).is_absolute() or file_name.startswith(("/", "\\")) \
            or ".." in parts or parts in ((), (".",)):
        raise DataError(f"{path}: image {image_id} has file_name {_shown(file_name)}, which is not a relative path "
                        f"inside the data root")
    return file_name


def _to_rle(segmentation, height: int, width: int) -> tuple[dict | None, str | None]:
    """A compressed RLE of any COCO segmentation, and a problem to warn about (None when fine); ValueError for a
    segmentation that is not COCO's."""
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return _rle(segmentation, height, width)
    if not isinstance(segmentation, list) or not segmentation:
        return None, "empty segmentation, skipped"
    rings, short, far = [], 0, 0
    for ring in segmentation:
        if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
            short += 1
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ring):
            bad = next(v for v in ring if not isinstance(v, (int, float)) or isinstance(v, bool))
            raise ValueError(f"polygon coordinate {_shown(bad)} is not a number")
        try:
            xy = np.array(ring, dtype=np.float64).reshape(-1, 2)
        except OverflowError:  # a JSON integer beyond float range
            far += 1
            continue
        if not (np.isfinite(xy).all() and (np.abs(xy - (width / 2, height / 2)) <= (1.5 * width, 1.5 * height)).all()):
            far += 1
            continue
        rings.append(xy.reshape(-1).tolist())
    problems = [f"{short} polygon ring(s) of fewer than 3 points"] if short else []
    if far:
        problems.append(f"{far} polygon ring(s) with a NaN, infinite or far-out coordinate (more than the image's "
                        f"size outside it)")
    if not rings:
        return None, f"no polygon ring left ({'; '.join(problems)}), skipped"
    rle = mask_utils.merge(mask_utils.frPyObjects(rings, height, width))
    return rle, f"{'; '.join(problems)} skipped" if problems else None


def _rle(segmentation: dict, height: int, width: int) -> tuple[dict | None, str | None]:
    """A COCO RLE, checked: pycocotools trusts its counts (too few leave the mask's end uninitialized, an invalid
    string makes it read past the text)."""
    size, counts = segmentation.get("size"), segmentation["counts"]
    if isinstance(counts, str):
        values = rle_string_counts(counts)
    elif isinstance(counts, list):
        bad = next((v for v in counts if not isinstance(v, int) or isinstance(v, bool) or v < 0), None)
        if bad is not None:
            raise ValueError(f"RLE count {_shown(bad)} is not a non-negative integer")
        values = counts
    else:
        raise ValueError(f"RLE counts {_shown(counts)} are neither a string nor a list of integers")
    if not isinstance(size, list) or size != [height, width]:
        return None, f"RLE size {_shown(size)} differs from the image's {height}x{width}, skipped"
    if sum(values) != height * width:
        return None, (f"RLE counts cover {sum(values)} pixels, the {height}x{width} image has {height * width}, "
                      f"skipped")
    if isinstance(counts, list):
        rle = mask_utils.frPyObjects({"size": size, "counts": counts}, height, width)
    else:
        rle = {"size": size, "counts": counts.encode("ascii")}
    if mask_utils.area(rle) == 0:
        return None, "empty segmentation, skipped"
    return rle, None


def rle_string_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string, decoded as pycocotools' rleFrString does (6-bit groups
    from '0', 5 value bits and a continuation bit each, the last group's 0x10 bit the sign; from the fourth
    count on, a difference to the count two before); ValueError for text that is not such a string.
    Hand-written: pycocotools exposes no check, and its decoder reads past the end of a truncated string."""
    counts: list[int] = []
    value = shift = 0
    for position, char in enumerate(text):
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise ValueError(f"RLE counts string holds {char!r} at {position}, outside COCO's alphabet ('0'..'o')")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError(f"RLE counts string decodes to a negative count at {position}")
        counts.append(value)
        value = shift = 0
    if shift:
        raise ValueError("RLE counts string ends in the middle of a count")
    return counts


def size_error(sample: CocoSample, size: tuple[int, int]) -> DataError:
    """An image that decodes at another (height, width) than its JSON says: training and inference refuse it."""
    return DataError(f"{sample.image}: is {size[1]}x{size[0]}, its JSON says {sample.width}x{sample.height} "
                     f"(image {sample.image_id})")


def check_header_sizes(samples: list[CocoSample]) -> None:
    """Each image's size from its header (Pillow reads no pixels) against its JSON, before any prediction: a
    DataError for the first that differs. An EXIF rotation by 90 degrees swaps the sides, as OpenCV's decoder
    applies it; a file Pillow cannot identify is left to the decoder."""
    for sample in samples:
        try:
            with Image.open(sample.image) as image:
                width, height = image.size
                if image.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):
                    width, height = height, width
        except (OSError, ValueError, SyntaxError):  # not an image Pillow knows (PIL.UnidentifiedImageError is one)
            continue
        if (height, width) != (sample.height, sample.width):
            raise size_error(sample, (height, width))


EXIF_ORIENTATION = 0x0112


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
