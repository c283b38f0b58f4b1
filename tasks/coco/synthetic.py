"""Synthetic recycling-trash photographs written in the exact layout of the trash competition (COCO JSON).

`ROOT/train_all.json`, `ROOT/train.json`, `ROOT/val.json` (a random split of train_all), `ROOT/test.json` (no
annotations) and images `ROOT/batch_01_vt/0001.jpg`, ... (`file_name` in the JSON is relative to ROOT). Each image
is a textured background with a few objects of the 10 categories: every category has its own shape family and
colour range (so a small model can learn them), sizes vary, objects overlap, Battery and Clothing are rare. Some
objects are drawn in two parts (a polygon list of two rings) and some segmentations are COCO RLE (compressed or
not), so the reader sees every encoding the real data may hold. Objects are painted largest first, the rule the
label maps follow (data/coco.py), so pixels and labels agree.

Usage: ``python -m tasks.coco.synthetic --out DIR --train 60 --test 10 --size 256 --seed 0``
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from utils.cli import run_main
from utils.errors import UserError
from utils.files import atomic_folder

TRASH_CATEGORIES: tuple[str, ...] = ("General trash", "Paper", "Paper pack", "Metal", "Glass", "Plastic",
                                     "Styrofoam", "Plastic bag", "Battery", "Clothing")
TRASH_CLASSES: tuple[str, ...] = ("Background", *TRASH_CATEGORIES)  # label 0 is the background

# Relative frequency of each category among the objects: Battery and Clothing are rare, as in the real data.
FREQUENCY = (1.0, 1.4, 0.6, 0.6, 0.6, 1.0, 0.6, 1.2, 0.08, 0.12)
# Shape family and HSV hue (OpenCV 0..180) of each category, so the classes are visually separable.
SHAPES = ("blob", "rect", "tri", "circle", "bottle", "star", "square", "blob", "circle", "ring")
HUES = (20, 100, 60, 0, 85, 120, 0, 160, 35, 140)
SATURATION = (80, 160, 200, 0, 110, 220, 0, 210, 255, 200)  # 0: grey objects (metal, styrofoam)
VALUE = (120, 220, 210, 160, 170, 230, 245, 200, 60, 150)
OBJECTS_PER_IMAGE = (2, 6)
TWO_PART_RATE, RLE_RATE, UNCOMPRESSED_RLE_RATE = 0.15, 0.15, 0.05
JPEG_QUALITY = 95
IMAGES_PER_BATCH = 100


def _shape(kind: str, cx: float, cy: float, r: float, angle: float, rng) -> np.ndarray:
    """Outline (N, 2) float of one shape family, centred at (cx, cy) with radius r, rotated by `angle`."""
    if kind in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * [1.0, rng.uniform(0.8, 1.0)]
    elif kind in ("rect", "square"):
        aspect = 1.0 if kind == "square" else rng.uniform(0.4, 0.7)
        pts = np.array([[-1, -aspect], [1, -aspect], [1, aspect], [-1, aspect]], float)
    elif kind == "tri":
        t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        radius = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius[:, None]
    elif kind == "bottle":
        pts = np.array([[-0.35, 1], [0.35, 1], [0.35, -0.3], [0.15, -0.55], [0.15, -1], [-0.15, -1],
                        [-0.15, -0.55], [-0.35, -0.3]], float)
    else:  # blob: a lumpy closed curve
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        wave = 1 + 0.25 * np.sin(2 * t + rng.uniform(0, 6.3)) + 0.15 * np.sin(3 * t + rng.uniform(0, 6.3))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * wave[:, None]
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) * r + [cx, cy]


def _background(size: int, rng) -> np.ndarray:
    """A textured backdrop: a smooth colour field, a wood/fabric-like stripe pattern and noise."""
    low = rng.uniform(60, 200, (4, 4, 3)).astype(np.float32)
    base = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = 12 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    noise = rng.normal(0, 8, (size, size, 3)).astype(np.float32)
    return np.clip(base + stripes[..., None] + noise, 0, 255)


def _colour(category: int, rng) -> np.ndarray:
    """A BGR colour of the category's hue, saturation and value, jittered."""
    hsv = np.array([[[(HUES[category] + rng.integers(-6, 7)) % 180,
                      np.clip(SATURATION[category] + rng.integers(-30, 31), 0, 255),
                      np.clip(VALUE[category] + rng.integers(-30, 31), 0, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _objects(size: int, rng) -> list[dict]:
    """The objects of one image: category, polygon parts (integer points) and their filled mask."""
    p = np.asarray(FREQUENCY) / sum(FREQUENCY)
    out = []
    for _ in range(int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))):
        category = int(rng.choice(len(TRASH_CATEGORIES), p=p))
        r = size * rng.uniform(0.06, 0.22)
        cx, cy = rng.uniform(r * 0.6, size - r * 0.6, 2)
        angle = rng.uniform(0, 2 * np.pi)
        kind = SHAPES[category]
        parts = [_shape(kind, cx, cy, r, angle, rng)]
        if rng.random() < TWO_PART_RATE:  # a second piece beside the first: one object, two polygons
            dx, dy = rng.choice([-1, 1], 2) * r * rng.uniform(1.2, 1.6, 2)
            parts.append(_shape(kind, cx + dx, cy + dy, r * 0.5, angle, rng))
        parts = [np.clip(np.rint(pts), 0, size - 1).astype(np.int32) for pts in parts]
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, parts, 1)
        if kind == "ring":  # a hole in the middle: only an RLE or a mask can hold it, so rings go as RLE
            cv2.circle(mask, (int(cx), int(cy)), int(r * 0.45), 0, -1)
        if mask.sum() < 16:
            continue
        out.append({"category": category, "parts": parts, "mask": mask, "rle_only": kind == "ring"})
    out.sort(key=lambda o: -int(o["mask"].sum()))  # painted largest first: smaller objects lie on top
    return out


def _render(objects: list[dict], size: int, rng) -> np.ndarray:
    image = _background(size, rng)
    for obj in objects:
        colour = _colour(obj["category"], rng)
        shade = rng.normal(0, 10, (size, size, 1)).astype(np.float32)  # surface texture
        m = obj["mask"].astype(bool)
        image[m] = np.clip(colour + shade[m], 0, 255)
        edges = cv2.morphologyEx(obj["mask"], cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
        image[edges] *= 0.6  # a darker outline, as objects in photos have
    return np.clip(image, 0, 255).astype(np.uint8)


def _segmentation(obj: dict, rng):
    """A polygon list (flat x, y per part) or, for some objects, a COCO RLE (compressed or not)."""
    if obj["rle_only"] or rng.random() < RLE_RATE:
        if rng.random() < UNCOMPRESSED_RLE_RATE / RLE_RATE:
            return _uncompressed_rle(obj["mask"])
        rle = mask_utils.encode(np.asfortranarray(obj["mask"]))
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return [pts.reshape(-1).astype(float).tolist() for pts in obj["parts"]]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a background run."""
    flat = mask.reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def _coco(images: list[dict], annotations: list[dict] | None) -> dict:
    data = {"info": {"description": "synthetic recycling trash", "version": "1.0"}, "licenses": [],
            "images": images,
            "categories": [{"id": i + 1, "name": n, "supercategory": n} for i, n in enumerate(TRASH_CATEGORIES)],
            "annotations": annotations or []}
    return data


CLI_NAMES = {"train": "--train", "test": "--test", "size": "--size", "seed": "--seed"}
CONFIG_NAMES = {"train": "data.synthetic.ids", "test": "data.synthetic.test_ids", "size": "data.synthetic.size",
                "seed": "data.synthetic.seed"}  # generated from a config's data.synthetic


def _check_args(out: Path, train: int, test: int, size: int, seed: int, val_fraction: float,
                names: dict = CLI_NAMES) -> None:
    if train < 2:
        raise UserError(f"{names['train']} must be >= 2, got {train}")
    if test < 0:
        raise UserError(f"{names['test']} must be >= 0, got {test}")
    if size < 64:
        raise UserError(f"{names['size']} must be >= 64, got {size}")
    if seed < 0:
        raise UserError(f"{names['seed']} must be >= 0, got {seed}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output path already exists and is not an empty directory: {out}")


def generate(out, train: int = 60, test: int = 10, size: int = 512, seed: int = 0, val_fraction: float = 0.2,
             progress: bool = True, names: dict = CLI_NAMES) -> Path:
    """Write the dataset to `out` and return it. Built in a sibling temporary folder renamed at the end, so an
    interrupted run never leaves a complete-looking dataset."""
    out = Path(out)
    _check_args(out, train, test, size, seed, val_fraction, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        rng = np.random.default_rng(seed)
        train_images, test_images, annotations = [], [], []
        for i in range(train + test):
            image_rng = np.random.default_rng(rng.integers(0, 2**62))
            folder = f"batch_{i // IMAGES_PER_BATCH + 1:02d}_vt"
            file_name = f"{folder}/{i % IMAGES_PER_BATCH + 1:04d}.jpg"
            objects = _objects(size, image_rng)
            (tmp / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp / file_name), _render(objects, size, image_rng),
                        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            labelled = i < train
            image_id = i if labelled else i - train
            record = {"license": 0, "url": None, "file_name": file_name, "height": size, "width": size,
                      "date_captured": None, "id": image_id}
            (train_images if labelled else test_images).append(record)
            if labelled:
                for obj in objects:
                    x, y, w, h = cv2.boundingRect(obj["mask"])
                    annotations.append({"id": len(annotations), "image_id": image_id,
                                        "category_id": obj["category"] + 1,
                                        "segmentation": _segmentation(obj, image_rng),
                                        "area": int(obj["mask"].sum()), "bbox": [x, y, w, h],
                                        "iscrowd": 0})
            if progress and (i + 1) % 50 == 0:
                print(f"synthetic_coco: {i + 1}/{train + test} images", file=sys.stderr)
        order = rng.permutation(train)
        n_val = max(1, round(train * val_fraction))
        val_ids = {int(i) for i in order[:n_val]}

        def subset(ids) -> dict:
            return _coco([im for im in train_images if im["id"] in ids],
                         [a for a in annotations if a["image_id"] in ids])

        all_ids = {im["id"] for im in train_images}
        for name, data in (("train_all.json", _coco(train_images, annotations)),
                           ("train.json", subset(all_ids - val_ids)), ("val.json", subset(val_ids)),
                           ("test.json", _coco(test_images, []))):
            (tmp / name).write_text(json.dumps(data, indent=1))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.coco.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset root to create")
    parser.add_argument("--train", type=int, default=60, help="labelled images (train_all.json)")
    parser.add_argument("--test", type=int, default=10, help="unlabelled test images (test.json)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--val-fraction", type=float, default=0.2, help="share of train_all.json in val.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(generate(args.out, args.train, args.test, args.size, args.seed, args.val_fraction))
    return 0


if __name__ == "__main__":
    run_main(main)
