"""`configs/voc_demo.yaml` on a Pascal VOC 2012 layout that the project's own generator did not write, scored by an
independent scorer: the check of issue #18 ("trains, inference.py writes the test stems' masks, mIoU >= 0.5").

The set is drawn here with Pillow only (no code of the framework): VOC's folders and split lists, JPEG photographs
of varied sizes, palette PNGs with VOC's colour map, void (255) as a band along every outline and over some whole
"difficult" objects. Each of the 20 object classes is an ellipse, rectangle or polygon family in its own colour
(random but fixed per class, not the framework's hue wheel) with a per-class texture; the test masks are kept
outside the data root. Then, as a user would, in fresh processes:

    python train.py --config configs/voc_demo.yaml --set data.root=ROOT --set data.synthetic=null --out RUN
    python inference.py --checkpoint RUN/best.pt --data ROOT --out MASKS

and the written PNGs are scored against the kept truth: mIoU over the classes present in the truth or the
prediction, void left out (VOC's evaluation: one confusion matrix over the whole test set).

    python benchmarks/voc_independent.py [--train 160] [--val 40] [--test 40] [--size 128] [--seed 7]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 21  # background and VOC's 20 object classes
VOID = 255


def voc_colormap() -> list[int]:
    """VOC's own colour map (bit-interleaved), flattened for Image.putpalette."""
    out = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return out


def class_styles(seed: int) -> list[dict]:
    """Per object class: a shape family, a base colour far enough from the others, a texture."""
    rng = np.random.default_rng(seed)
    colours: list[np.ndarray] = []
    while len(colours) < CLASSES - 1:
        c = rng.integers(20, 236, 3)
        if all(np.abs(c - o).sum() > 90 for o in colours):
            colours.append(c)
    return [{"shape": ("ellipse", "rectangle", "polygon")[k % 3], "colour": colours[k], "texture": k % 4,
             "sides": 3 + k % 5} for k in range(CLASSES - 1)]


def draw_image(w: int, h: int, styles: list[dict], rng) -> tuple[Image.Image, np.ndarray]:
    """One RGB photograph and its label map (0 background, 1..20, 255 void)."""
    bg = rng.integers(60, 200, 3)
    pixels = np.clip(bg + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    photo = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(1.5))).copy()
    labels = np.zeros((h, w), np.uint8)
    outlines = np.zeros((h, w), bool)  # a band along every outline, void as VOC marks it
    ys, xs = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, CLASSES))
        style = styles[cls - 1]
        r = min(w, h) * rng.uniform(0.12, 0.32)
        cx, cy = rng.uniform(r * 0.4, w - r * 0.4), rng.uniform(r * 0.4, h - r * 0.4)
        shape = Image.new("L", (w, h), 0)
        pen = ImageDraw.Draw(shape)
        if style["shape"] == "ellipse":
            pen.ellipse([cx - r, cy - r * rng.uniform(0.5, 1), cx + r, cy + r * rng.uniform(0.5, 1)], fill=1)
        elif style["shape"] == "rectangle":
            pen.rectangle([cx - r, cy - r * 0.6, cx + r, cy + r * 0.6], fill=1)
            shape = shape.rotate(float(rng.uniform(0, 90)), center=(cx, cy))
        else:
            t = np.linspace(0, 2 * np.pi, style["sides"], endpoint=False) + rng.uniform(0, np.pi)
            pen.polygon([(float(cx + r * np.cos(a)), float(cy + r * np.sin(a))) for a in t], fill=1)
        inside = np.asarray(shape, bool)
        texture = (style["texture"] == 1) * 30 * np.sin(xs / 2.0) + (style["texture"] == 2) * 30 * np.sin(
            (xs + ys) / 3.0) + (style["texture"] == 3) * 25 * ((xs // 4 + ys // 4) % 2)
        colour = style["colour"] * rng.uniform(0.85, 1.15) + texture[..., None] + rng.normal(0, 8, (h, w, 3))
        photo[inside] = np.clip(colour[inside], 0, 255).astype(np.uint8)
        labels[inside] = VOID if rng.random() < 0.04 else cls  # now and then a "difficult" object
        grown = np.asarray(shape.filter(ImageFilter.MaxFilter(3)), bool)
        shrunk = np.asarray(shape.filter(ImageFilter.MinFilter(3)), bool)
        outlines |= grown & ~shrunk
    labels[outlines] = VOID
    return Image.fromarray(photo), labels


def make_set(root: Path, truth: Path, train: int, val: int, test: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    styles, palette = class_styles(seed), voc_colormap()
    for folder in (root / "JPEGImages", root / "SegmentationClass", root / "ImageSets/Segmentation", truth):
        folder.mkdir(parents=True)
    stems = {"train": [f"indep_{i:05d}" for i in range(train)],
             "val": [f"indep_{i:05d}" for i in range(train, train + val)],
             "test": [f"indep_{i:05d}" for i in range(train + val, train + val + test)]}
    for split, listed in stems.items():
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("".join(s + "\n" for s in listed))
        for stem in listed:
            w, h = (int(size * rng.uniform(0.55, 1.0)) for _ in range(2))
            photo, labels = draw_image(w, h, styles, rng)
            photo.save(root / "JPEGImages" / f"{stem}.jpg", quality=90)
            mask = Image.fromarray(labels, "P")
            mask.putpalette(palette)
            mask.save((truth if split == "test" else root / "SegmentationClass") / f"{stem}.png")


def score(pred_dir: Path, truth: Path) -> tuple[float, int]:
    """VOC's mIoU: one confusion matrix over every test image, void left out."""
    confusion = np.zeros((CLASSES, CLASSES), np.int64)
    files = sorted(truth.glob("*.png"))
    for path in files:
        gt = np.asarray(Image.open(path))
        pred_path = pred_dir / path.name
        if not pred_path.is_file():
            raise SystemExit(f"{pred_path}: no predicted mask for test stem {path.stem}")
        pred = np.asarray(Image.open(pred_path))
        if pred.shape != gt.shape:
            raise SystemExit(f"{pred_path}: size {pred.shape} differs from the truth's {gt.shape}")
        keep = gt != VOID
        confusion += np.bincount(gt[keep].astype(np.int64) * CLASSES + pred[keep], minlength=CLASSES ** 2
                                 ).reshape(CLASSES, CLASSES)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()), len(files)


def run(cmd: list[str]) -> float:
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=int, default=160)
    p.add_argument("--val", type=int, default=40)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--size", type=int, default=128, help="the largest image side (px)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--config", default="configs/voc_demo.yaml")
    p.add_argument("--set", action="append", default=[], help="more overrides for train.py")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="voc_independent_"))
    data, truth = work / "VOC2012", work / "test_truth"
    make_set(data, truth, args.train, args.val, args.test, args.size, args.seed)
    python = sys.executable
    sets = [x for s in [f"data.root={data}", "data.synthetic=null", f"data.cache_dir={work / 'cache'}"] + args.set
            for x in ("--set", s)]
    train_s = run([python, "train.py", "--config", args.config, *sets, "--out", str(work / "run"), "--no-progress"])
    infer_s = run([python, "inference.py", "--checkpoint", str(work / "run/best.pt"), "--data", str(data),
                   "--out", str(work / "masks")])
    miou, images = score(work / "masks", truth)
    print(f"{args.config} on an independent VOC set ({args.train} train, {args.val} val, {images} test images, "
          f"sides {int(args.size * 0.55)}..{args.size} px): train {train_s / 60:.1f} min, inference {infer_s:.0f} s, "
          f"independent test mIoU {miou:.3f}  (work folder {work})")


if __name__ == "__main__":
    main()
