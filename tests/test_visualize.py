"""visualize.py: augmentation grids show what training sees, submission grids show the CSV's masks."""
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np

from analysis.overlay import class_colors, color_masks
from analysis.visualize import augment_tiles, submission_tiles
from tasks.handbone.reader import scan_split
from tasks.handbone.submission import SubmissionWriter
from tasks.registry import build_task
from tests.conftest import ROOT
from trainer.runtime import setup_runtime
from utils.config import load_config
from utils.images import read_gray
from utils.rle import encode_rle


def test_augment_tiles_follow_the_pipeline(tiny_config):
    plain = tiny_config()
    tiles, titles = augment_tiles(plain, setup_runtime(plain.trainer), n_images=2, draws=2, progress=False)
    assert len(tiles) == 2 and all(len(row) == 2 for row in tiles) and titles[0][0].endswith("#1")
    assert np.array_equal(tiles[0][0], tiles[0][1])  # no augmentation: every draw is the same
    flipped = tiny_config("transforms.gpu=[{name: HorizontalFlip, p: 1.0}]")
    flips, _ = augment_tiles(flipped, setup_runtime(flipped.trainer), n_images=1, draws=1, progress=False)
    assert np.array_equal(flips[0][0], tiles[0][0][:, ::-1])  # image and masks flipped together


def test_submission_overlay_shows_the_csv_masks(dataset_root, tmp_path, classes):
    samples = scan_split(dataset_root, "test")
    image = read_gray(samples[0].image)
    mask = np.zeros((len(classes), *image.shape), dtype=np.uint8)
    mask[3, 10:30, 20:50] = 1
    csv = tmp_path / "sub.csv"
    with SubmissionWriter(csv, classes) as writer:
        for s in samples:
            writer.write_image(Path(s.key).name, [encode_rle(m) for m in mask])
    task = build_task(load_config(ROOT / "configs" / "_base_" / "hand_bones.yaml"))
    tiles, titles = submission_tiles(str(csv), str(dataset_root), task, n_images=8)
    assert titles == [s.key for s in samples]
    assert np.array_equal(tiles[0], color_masks(image, mask.astype(bool)))
    blended = tiles[0][15, 30].astype(float)
    assert np.allclose(blended, 0.45 * image[15, 30] + 0.55 * class_colors(len(classes))[3], atol=1)

    out = tmp_path / "grid.png"
    run = subprocess.run([sys.executable, "visualize.py", "submission", "--csv", str(csv), "--data",
                          str(dataset_root), "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert matplotlib.image.imread(out).shape[0] > 100

    bad = subprocess.run([sys.executable, "visualize.py", "submission", "--csv", str(tmp_path / "none.csv"),
                          "--data", str(dataset_root)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'none.csv'}: submission file not found"
