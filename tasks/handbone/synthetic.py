"""Synthetic hand X-rays written in the exact on-disk layout of the real competition dataset.

The real data cannot be shipped, so demos and tests use this generator instead. The layout and
the JSON quirks (a ``.jpg`` filename and 3060 x 3060 metadata that do not match the PNG, Korean
spreadsheet headers, ``_x0008_`` junk in the sex column) are reproduced on purpose, so that code
which reads the synthetic set also reads the real one.

Usage: ``python -m tasks.handbone.synthetic --out DIR --ids 20 --test-ids 5 --size 2048 --seed 0``
"""
import argparse
import datetime
import io
import json
import uuid
import zipfile
from pathlib import Path

import cv2
import numpy as np
import openpyxl
from openpyxl.writer.excel import ExcelWriter
from tqdm import tqdm

from utils.cli import run_main
from utils.errors import UserError
from utils.files import atomic_folder

HAND_BONE_CLASSES: tuple[str, ...] = tuple(f"finger-{i}" for i in range(1, 20)) + (
    "Trapezium", "Trapezoid", "Capitate", "Hamate",
    "Scaphoid", "Lunate", "Triquetrum", "Pisiform",
    "Radius", "Ulna",
)

# ---- Hand layout: a right hand seen as in a PA radiograph (thumb on the image's left).
# Lengths are fractions of the image size S, positions are offsets from HAND_ORIGIN, y points down.
HAND_ORIGIN = (0.5, 0.54)  # centre of the capitate, the pivot of the random pose

# Carpals: name -> (dx, dy, radius_x, radius_y, tilt in degrees)
CARPALS = {
    "Trapezium": (-0.086, 0.002, 0.026, 0.021, -20.0),
    "Trapezoid": (-0.045, -0.006, 0.019, 0.018, 0.0),
    "Capitate": (0.0, 0.0, 0.021, 0.034, 0.0),
    "Hamate": (0.041, 0.002, 0.024, 0.029, 15.0),
    "Scaphoid": (-0.068, 0.052, 0.035, 0.021, -30.0),
    "Lunate": (-0.012, 0.060, 0.027, 0.024, 0.0),
    "Triquetrum": (0.045, 0.058, 0.025, 0.020, 25.0),
    "Pisiform": (0.060, 0.072, 0.017, 0.016, 0.0),  # ~70 px across at S=2048, overlaps Triquetrum
}

# Rays: (number of the distal-most finger class, base (dx, dy) on the distal carpal row,
# direction in degrees from vertical (+ leans towards the little finger),
# bones from metacarpal outwards as (length, base radius, head radius)).
RAYS = (
    (1, (-0.092, -0.016), -42.0, ((0.105, 0.019, 0.016), (0.075, 0.017, 0.014), (0.055, 0.015, 0.010))),
    (4, (-0.047, -0.020), -10.0, ((0.155, 0.017, 0.015), (0.105, 0.016, 0.013),
                                  (0.065, 0.014, 0.011), (0.050, 0.012, 0.008))),
    (8, (0.000, -0.030), 0.0, ((0.165, 0.018, 0.016), (0.115, 0.017, 0.014),
                               (0.075, 0.014, 0.011), (0.052, 0.012, 0.008))),
    (12, (0.036, -0.024), 9.0, ((0.150, 0.016, 0.014), (0.108, 0.016, 0.013),
                                (0.070, 0.014, 0.011), (0.050, 0.011, 0.008))),
    (16, (0.066, -0.012), 19.0, ((0.130, 0.015, 0.013), (0.085, 0.014, 0.012),
                                 (0.052, 0.012, 0.009), (0.045, 0.010, 0.007))),
)
JOINT_GAP = 0.008  # joint space between consecutive bones of a ray

# Forearm: name -> (proximal end (dx, dy), distal end (dx, dy), proximal radius, distal radius).
# The proximal ends lie below the image, so the shafts run off the bottom edge.
FOREARM = {
    "Radius": ((-0.050, 0.60), (-0.045, 0.095), 0.032, 0.055),
    "Ulna": ((0.055, 0.60), (0.050, 0.110), 0.024, 0.027),
}
LONG_BONE_WAIST = 0.22  # shafts are this much narrower than the ends
CAPSULE_SIDE_POINTS, CAPSULE_CAP_POINTS, BLOB_POINTS = 12, 9, 28

# ---- Random pose and per-image variation.
MAX_ROTATION_DEG, SCALE_RANGE, MAX_SHIFT = 15.0, (0.9, 1.1), 0.02
FINGER_SPREAD_DEG, JOINT_BEND_DEG, OUTLINE_WAVE = 4.0, 2.0, 0.04

# ---- Rendering, intensities in [0, 1] before contrast jitter.
BACKGROUND, SOFT_TISSUE, BONE, CORTEX = 0.06, 0.28, 0.30, 0.22
CORTEX_WIDTH, EDGE_BLUR = 0.003, 0.0007  # fractions of S
TISSUE_RES, TISSUE_MARGIN, TISSUE_BLUR = 256, 0.03, 0.012  # tissue is drawn at low resolution
GRADIENT, NOISE_SIGMA = 0.08, 0.02

# ---- Files.
JSON_METADATA = {"height": 3060, "width": 3060}  # what the real JSONs say, whatever the PNG size
FIRST_TIMESTAMP = 1661130000000
META_HEADER = ("ID", "나이", "성별", "체중(몸무게)", "키(신장)")
META_JUNK = "_x0008_"
PNG_FAST = [cv2.IMWRITE_PNG_COMPRESSION, 1]  # noise barely compresses; favour speed
XLSX_TIMESTAMP = (2022, 8, 22, 0, 0, 0)


def _capsule(p0, p1, r0, r1, rng) -> np.ndarray:
    """Outline of a long bone from p0 (base) to p1 (head): rounded ends, a waist, a wavy edge."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    length = float(np.linalg.norm(p1 - p0))
    u = (p1 - p0) / length
    n = np.array([-u[1], u[0]])
    r0, r1 = min(r0, length / 2), min(r1, length / 2)
    t = np.linspace(0.0, 1.0, CAPSULE_SIDE_POINTS)[1:-1]
    along = r0 + t * (length - r0 - r1)
    half = (r0 + t * (r1 - r0)) * (1 - LONG_BONE_WAIST * np.sin(np.pi * t))
    cap = np.linspace(-np.pi / 2, np.pi / 2, CAPSULE_CAP_POINTS)
    a = np.concatenate([along, length - r1 + r1 * np.cos(cap), along[::-1], r0 - r0 * np.cos(cap)])
    b = np.concatenate([-half, r1 * np.sin(cap), half[::-1], -r0 * np.sin(cap)])
    s = np.linspace(0, 2 * np.pi, len(a), endpoint=False)
    b = b * (1 + OUTLINE_WAVE * np.sin(3 * s + rng.uniform(0, 2 * np.pi)))
    return p0 + a[:, None] * u + b[:, None] * n


def _blob(center, rx, ry, tilt_deg, rng) -> np.ndarray:
    """Outline of a carpal: a tilted ellipse with a lumpy edge."""
    th = np.linspace(0, 2 * np.pi, BLOB_POINTS, endpoint=False)
    r = 1 + OUTLINE_WAVE * (np.sin(2 * th + rng.uniform(0, 2 * np.pi)) + np.sin(3 * th + rng.uniform(0, 2 * np.pi)))
    x, y = rx * r * np.cos(th), ry * r * np.sin(th)
    c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
    return np.asarray(center, float) + np.stack([c * x - s * y, s * x + c * y], axis=1)


def _direction(angle_deg: float) -> np.ndarray:
    """Unit vector pointing up the image, leaning by angle_deg towards +x."""
    a = np.radians(angle_deg)
    return np.array([np.sin(a), -np.cos(a)])


def _right_hand(rng) -> dict[str, np.ndarray]:
    """Bone outlines (in units of S, relative to HAND_ORIGIN) of one randomly posed right hand."""
    out = {}
    for name, (dx, dy, rx, ry, tilt) in CARPALS.items():
        out[name] = _blob((dx, dy), rx, ry, tilt, rng)
    for name, (p0, p1, r0, r1) in FOREARM.items():
        out[name] = _capsule(p0, p1, r0, r1, rng)
    for distal_class, base, angle, bones in RAYS:
        spread = angle + rng.normal(0, FINGER_SPREAD_DEG)
        start = np.asarray(base, float)
        for k, (length, r0, r1) in enumerate(bones):
            bend = angle if k == 0 else spread + rng.normal(0, JOINT_BEND_DEG)
            end = start + length * _direction(bend)
            out[f"finger-{distal_class + len(bones) - 1 - k}"] = _capsule(start, end, r0, r1, rng)
            start = end + JOINT_GAP * _direction(bend)
    rot = np.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    scale = rng.uniform(*SCALE_RANGE)
    m = scale * np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    shift = np.asarray(HAND_ORIGIN) + rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)
    return {name: pts @ m.T + shift for name, pts in out.items()}


def _to_pixels(outline: np.ndarray, size: int, mirror: bool) -> np.ndarray:
    """Integer pixel polygon inside the image; repeated consecutive points are dropped."""
    pts = outline * size
    if mirror:
        pts[:, 0] = size - 1 - pts[:, 0]
    pts = np.clip(np.rint(pts), 0, size - 1).astype(np.int32)
    keep = np.any(pts != np.roll(pts, 1, axis=0), axis=1)
    return pts[keep]


def _render(polygons: list[np.ndarray], size: int, rng) -> np.ndarray:
    """X-ray-like uint8 image: each bone is its filled polygon, densities add up where bones overlap."""
    rim = max(1, round(CORTEX_WIDTH * size))
    pad = rim + 1  # a zero border so erosion also thins bones touching the image edge
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rim + 1, 2 * rim + 1))
    density = np.zeros((size + 2 * pad, size + 2 * pad), np.float32)
    for pts in polygons:
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0) + 2 * pad + 1
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(mask, [pts - (x0, y0) + pad], 1)
        cortex = mask - cv2.erode(mask, kernel)
        gain = rng.uniform(0.85, 1.1)
        density[y0:y1, x0:x1] += gain * (BONE * mask + CORTEX * cortex)
    density = density[pad:-pad, pad:-pad]
    sigma = EDGE_BLUR * size
    if sigma >= 0.5:
        density = cv2.GaussianBlur(density, (0, 0), sigma)

    low = min(size, TISSUE_RES)
    tissue = np.zeros((low, low), np.uint8)
    cv2.fillPoly(tissue, [np.rint(p * (low / size)).astype(np.int32) for p in polygons], 1)
    margin = max(1, round(TISSUE_MARGIN * low))
    tissue = cv2.dilate(tissue, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1,) * 2))
    tissue = cv2.GaussianBlur(tissue.astype(np.float32), (0, 0), TISSUE_BLUR * low)
    ramp = np.linspace(-0.5, 0.5, low, dtype=np.float32)
    gx, gy = rng.uniform(-GRADIENT, GRADIENT, 2).astype(np.float32)
    backdrop = BACKGROUND + SOFT_TISSUE * tissue + gx * ramp[None, :] + gy * ramp[:, None]
    backdrop = cv2.resize(backdrop, (size, size), interpolation=cv2.INTER_LINEAR)

    image = backdrop
    image += density
    image *= rng.uniform(0.85, 1.15) * 255
    image += rng.uniform(-0.05, 0.05) * 255 + 0.5
    noise = rng.standard_normal((size, size), dtype=np.float32)
    noise *= NOISE_SIGMA * 255
    image += noise
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def _uuid(rng) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _annotation(polygons: dict[str, np.ndarray], stem: str, parent: str, rng) -> dict:
    """The real dataset's JSON record, including its mismatched filename extension and metadata."""
    return {
        "annotations": [
            {"id": _uuid(rng), "type": "poly_seg", "attributes": {},
             "points": polygons[name].tolist(), "label": name}
            for name in HAND_BONE_CLASSES
        ],
        "attributes": {},
        "file_id": _uuid(rng),
        "filename": f"{stem}.jpg",
        "parent_path": parent,
        "last_modifier_id": _uuid(rng),
        "metadata": dict(JSON_METADATA),
        "last_workers": {},
    }


def _suffixed(n: int, rng) -> set[int]:
    """About a third of the IDs name their files ``..._R``/``..._L``; both styles appear when n >= 2."""
    return set(rng.permutation(n)[: -(-n // 3)].tolist())


def _write_meta(path: Path, n_ids: int, rng) -> None:
    """meta_data.xlsx with the real Korean headers and a few junk-prefixed sex values."""
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(META_HEADER)
    junk = set(rng.choice(n_ids, size=max(1, n_ids // 6), replace=False).tolist())
    for i in range(n_ids):
        male = bool(rng.random() < 0.5)
        sex = "남" if male else "여"
        weight = rng.normal(72, 9) if male else rng.normal(57, 7)
        height = rng.normal(174, 6) if male else rng.normal(161, 5)
        ws.append((i, int(rng.integers(20, 70)), META_JUNK + sex if i in junk else sex,
                   round(weight), round(height)))
    wb.properties.created = wb.properties.modified = datetime.datetime(*XLSX_TIMESTAMP)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        ExcelWriter(wb, archive).save()  # unlike wb.save(), keeps our fixed "modified" time
    # Re-pack with fixed member timestamps so the file is byte-for-byte reproducible.
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for name in src.namelist():
            dst.writestr(zipfile.ZipInfo(name, date_time=XLSX_TIMESTAMP), src.read(name), zipfile.ZIP_DEFLATED)


def _write_hand(root: Path, parent: str, stem: str, size: int, seed, mirror: bool, labelled: bool) -> None:
    """One PNG (plus its JSON when labelled): a posed right hand, flipped into a left one if mirror."""
    rng = np.random.default_rng(seed)
    polygons = {name: _to_pixels(o, size, mirror) for name, o in _right_hand(rng).items()}
    image = _render([polygons[n] for n in HAND_BONE_CLASSES], size, rng)
    png_dir = root / parent.lstrip("/")
    png_dir.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(png_dir / f"{stem}.png"), image, PNG_FAST)
    if labelled:
        json_dir = root / "train" / "outputs_json" / png_dir.name
        json_dir.mkdir(parents=True, exist_ok=True)
        record = _annotation(polygons, stem, parent, rng)
        (json_dir / f"{stem}.json").write_text(json.dumps(record), encoding="utf-8")


CLI_NAMES = {"ids": "--ids", "test_ids": "--test-ids", "size": "--size", "seed": "--seed"}
CONFIG_NAMES = {key: f"data.synthetic.{key}" for key in CLI_NAMES}  # generated from a config's data.synthetic


def _check_args(out: Path, ids: int, test_ids: int, size: int, seed: int, names: dict = CLI_NAMES) -> None:
    if ids < 1:
        raise UserError(f"{names['ids']} must be >= 1, got {ids}")
    if test_ids < 0:
        raise UserError(f"{names['test_ids']} must be >= 0, got {test_ids}")
    if size < 128:
        raise UserError(f"{names['size']} must be >= 128, got {size}")
    if seed < 0:
        raise UserError(f"{names['seed']} must be >= 0, got {seed}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"output path already exists and is not an empty directory: {out}")


def generate(out, ids: int, test_ids: int, size: int = 2048, seed: int = 0, progress: bool = True,
             names: dict = CLI_NAMES) -> Path:
    """Write a synthetic dataset to ``out`` (train IDs with JSON, test IDs without) and return it.

    Everything is written into a sibling temporary directory that is renamed to ``out`` at the
    end, so an interrupted run never leaves a dataset that looks complete.
    """
    out = Path(out)
    _check_args(out, ids, test_ids, size, seed, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out) as tmp:
        rng = np.random.default_rng(seed)
        n_ids = ids + test_ids
        image_seeds = rng.integers(0, 2**62, size=(n_ids, 2))
        suffixed = _suffixed(ids, rng) | {ids + i for i in _suffixed(test_ids, rng)}
        gaps = rng.integers(60_000, 600_000, size=(n_ids, 2))
        stamps = FIRST_TIMESTAMP + np.cumsum(gaps.ravel()).reshape(n_ids, 2)
        with tqdm(total=2 * n_ids, desc="synthetic", unit="img", disable=not progress) as bar:
            for i in range(n_ids):
                split = "train" if i < ids else "test"
                for side, stamp in enumerate(stamps[i]):
                    stem = f"image{stamp}" + (("_R", "_L")[side] if i in suffixed else "")
                    _write_hand(tmp, f"/{split}/DCM/ID{i:03d}", stem, size, image_seeds[i, side],
                                mirror=side == 1, labelled=split == "train")
                    bar.update()
        _write_meta(tmp / "meta_data.xlsx", n_ids, rng)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.handbone.synthetic", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="dataset root to create")
    parser.add_argument("--ids", type=int, default=20, help="train persons (2 images each)")
    parser.add_argument("--test-ids", type=int, default=5, help="test persons (2 images each, no labels)")
    parser.add_argument("--size", type=int, default=2048, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(generate(args.out, args.ids, args.test_ids, args.size, args.seed))
    return 0


if __name__ == "__main__":
    run_main(main)
