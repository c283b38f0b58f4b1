"""A synthetic Pascal VOC 2012 segmentation set, in VOC's exact layout:

    JPEGImages/<stem>.jpg                       photographs of varied sizes (each side 0.6..1 x --size)
    SegmentationClass/<stem>.png                palette PNGs with VOC's palette: 0 background, 1..20 the classes,
                                                255 void (a band along every object's outline, and now and then a
                                                whole "difficult" object), as VOC annotates
    ImageSets/Segmentation/{train,val,trainval,test}.txt    one stem per line; test images have no mask

Each of VOC's 20 classes is a shape family and a colour (the second ten also striped) on a textured background;
objects overlap and vary in size, so a small CPU model can learn them. Objects are painted largest first.

Usage: ``python -m tasks.folders.synthetic --out DIR --train 160 --val 40 --test 10 --size 128 --seed 0``
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from tasks.folders.settings import voc_palette
from utils.cli import run_main
from utils.errors import UserError
from utils.files import atomic_folder

VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
VOID = 255
SHAPES = ("circle", "square", "triangle", "star", "cross", "ring", "diamond", "hexagon", "bar", "arrow")
HUES = tuple(round(i * 180 / 20) for i in range(20))  # OpenCV hue (0..180), one per class, 9 apart
OBJECTS_PER_IMAGE = (1, 4)
DIFFICULT_RATE = 0.04  # objects marked void as a whole, as VOC marks difficult ones
JPEG_QUALITY = 95


def _outline(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(N, 2) float outline of a shape family, centred at (cx, cy), radius r, rotated by `angle`."""
    if kind in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8
    elif kind == "triangle":
        t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * np.where(np.arange(10) % 2 == 0, 1.0, 0.45)[:, None]
    elif kind == "cross":
        a, b = 1.0, 0.35
        pts = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b], [-a, b],
                        [-a, -b], [-b, -b]], float)
    elif kind == "diamond":
        pts = np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], float)
    elif kind == "hexagon":
        t = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif kind == "bar":
        pts = np.array([[-1, -0.3], [1, -0.3], [1, 0.3], [-1, 0.3]], float)
    else:  # arrow
        pts = np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.25], [-1, 0.25]], float)
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]]) * r + [cx, cy]


def _object_mask(label: int, h: int, w: int, rng) -> np.ndarray:
    kind = SHAPES[(label - 1) % len(SHAPES)]
    r = min(h, w) * rng.uniform(0.12, 0.3)
    cx, cy = rng.uniform(r * 0.5, w - r * 0.5), rng.uniform(r * 0.5, h - r * 0.5)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.rint(_outline(kind, cx, cy, r, rng.uniform(0, 2 * np.pi))).astype(np.int32)], 1)
    if kind == "ring":
        cv2.circle(mask, (int(cx), int(cy)), int(r * 0.5), 0, -1)
    return mask


def _background(h: int, w: int, rng) -> np.ndarray:
    """A smooth colour field with a faint stripe texture and noise (float32 RGB)."""
    base = cv2.resize(rng.uniform(70, 190, (3, 3, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(8, 24)
    stripes = 10 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    return base + stripes[..., None] + rng.normal(0, 6, (h, w, 3)).astype(np.float32)


def _paint(image: np.ndarray, mask: np.ndarray, label: int, rng) -> None:
    """The class's colour (hue, jittered), striped for the second ten classes, with a darker outline."""
    hsv = np.array([[[(HUES[label - 1] + rng.integers(-2, 3)) % 180, rng.integers(170, 256),
                      rng.integers(150, 240)]]], np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    h, w = mask.shape
    shade = rng.normal(0, 8, (h, w, 1)).astype(np.float32)
    if label > 10:
        yy, xx = np.mgrid[0:h, 0:w]
        shade = shade + (((xx + yy) // 3) % 2 * 40 - 20)[..., None].astype(np.float32)
    m = mask.astype(bool)
    image[m] = colour + shade[m]
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
    image[edge] *= 0.6


def draw(h: int, w: int, num_classes: int, void_width: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 RGB photograph and its (H, W) uint8 label map with void (255)."""
    image = _background(h, w, rng)
    labels = np.zeros((h, w), np.uint8)
    objects = [(label, _object_mask(label, h, w, rng)) for label in
               rng.integers(1, num_classes, int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1)))]
    difficult = np.zeros((h, w), bool)
    for label, mask in sorted(objects, key=lambda o: -int(o[1].sum())):  # largest first: smaller ones on top
        _paint(image, mask, int(label), rng)
        labels[mask.astype(bool)] = label
        difficult[mask.astype(bool)] = rng.random() < DIFFICULT_RATE
    kernel = np.ones((2 * void_width + 1, 2 * void_width + 1), np.uint8)
    band = cv2.dilate(labels, kernel) != cv2.erode(labels, kernel)  # both sides of every outline
    labels[band | difficult] = VOID
    return np.clip(image, 0, 255).astype(np.uint8), labels


CLI_NAMES = {"train": "--train", "test": "--test", "size": "--size", "seed": "--seed"}
CONFIG_NAMES = {"train": "data.synthetic.ids", "test": "data.synthetic.test_ids", "size": "data.synthetic.size",
                "seed": "data.synthetic.seed"}  # generated from a config's data.synthetic


def generate(out, train: int = 160, val: int = 40, test: int = 10, size: int = 128, seed: int = 0,
             num_classes: int = len(VOC_CLASSES), progress: bool = True, names: dict = CLI_NAMES) -> Path:
    """Write the set to `out` (built under a temporary name, renamed when complete) and return it; classes
    1..num_classes-1 of VOC's are drawn."""
    out = Path(out)
    if train < 2 or val < 1:
        raise UserError(f"{names['train']}: need at least 3 labelled images (2 train, 1 val), got {train + val}")
    if test < 0 or seed < 0:
        raise UserError(f"{names['test']} and {names['seed']} must be >= 0")
    if size < 32:
        raise UserError(f"{names['size']} must be >= 32, got {size}")
    if not 2 <= num_classes <= len(VOC_CLASSES):
        raise UserError(f"the generator draws 2..{len(VOC_CLASSES)} classes, not {num_classes}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output path already exists and is not an empty directory: {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    palette = [v for rgb in voc_palette() for v in rgb]
    void_width = max(1, round(size / 96))
    rng = np.random.default_rng(seed)
    stems = [f"2012_{i:06d}" for i in range(train + val + test)]
    with atomic_folder(out) as tmp:
        for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (tmp / folder).mkdir(parents=True)
        for i, stem in enumerate(tqdm(stems, desc="synthetic VOC", unit="img", disable=not progress)):
            image_rng = np.random.default_rng(rng.integers(0, 2**62))
            h, w = (int(size * image_rng.uniform(0.6, 1.0)) for _ in range(2))
            image, labels = draw(h, w, num_classes, void_width, image_rng)
            cv2.imwrite(str(tmp / "JPEGImages" / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if i < train + val:
                mask = Image.fromarray(labels, "P")
                mask.putpalette(palette)
                mask.save(tmp / "SegmentationClass" / f"{stem}.png")
        lists = {"train": stems[:train], "val": stems[train:train + val], "trainval": stems[:train + val],
                 "test": stems[train + val:]}
        for name, listed in lists.items():
            (tmp / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{s}\n" for s in listed))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.folders.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset root to create")
    parser.add_argument("--train", type=int, default=160, help="images of the train split")
    parser.add_argument("--val", type=int, default=40, help="images of the val split")
    parser.add_argument("--test", type=int, default=10, help="test images (no masks)")
    parser.add_argument("--size", type=int, default=128, help="the largest image side in pixels")
    parser.add_argument("--classes", type=int, default=len(VOC_CLASSES), help="classes drawn, background included")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(generate(args.out, args.train, args.val, args.test, args.size, args.seed, args.classes))
    return 0


if __name__ == "__main__":
    run_main(main)
