"""The hand-bone competition layout (`task.format: handbone`): `ROOT/{train,test}/DCM/IDxxx/*.png` + polygon JSONs
(reader.py); grayscale; one bit plane per class (bones overlap); GroupKFold by person; the RLE CSV (submission.py);
pseudo-labels in the training layout (pseudo.py); the synthetic generator (synthetic.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from data.splits import group_kfold
from tasks.handbone import pseudo, synthetic
from tasks.handbone.reader import rasterize, read_meta, read_polygons, scan_split
from utils.files import check_new_folder, check_output_folder
from utils.images import read_gray, resize_image


class HandboneLayout:
    name = "handbone"
    channels = 1
    label_kind = "bits"  # one bit plane per class: the multilabel mode's targets
    modes = ("multilabel",)  # the task modes it can feed (every JSON holds all 29 bones: no one-class binary)
    ignore_index = None  # polygons leave no void
    splits = ("kfold",)  # the values of data.split it knows
    submission = "handbone"  # its competition's submission (task.submission: null)

    def __init__(self, task):
        self.classes = list(task.classes)

    @property
    def cache_id(self) -> str:
        """What the cache content depends on beyond the files, classes and size."""
        return self.name

    def ensure(self, data, progress: bool) -> None:
        """Generate the synthetic set into data.root when configured (data.synthetic) and missing."""
        root = Path(data.root)
        if data.synthetic is not None and not (root / "train").is_dir():
            s = data.synthetic
            print(f"generating the synthetic dataset into {root} ({s.ids} persons, {s.test_ids} test, {s.size}px)")
            synthetic.generate(root, ids=s.ids, test_ids=s.test_ids, size=s.size, seed=s.seed, progress=progress,
                               names=synthetic.CONFIG_NAMES)

    def fold(self, data, seed: int) -> tuple[list, np.ndarray, np.ndarray, list[str]]:
        """(samples, train indices, validation indices, warnings) of data.fold: both hands of a person together."""
        samples = scan_split(data.root, "train")
        train_idx, val_idx = group_kfold([s.group for s in samples], data.n_splits, data.fold)
        return samples, train_idx, val_idx, []

    def pseudo_samples(self, data, source: str) -> list:
        """A folder written by pseudo_label.py reads like the training set."""
        return scan_split(source, "train")

    def test_samples(self, root) -> list:
        return scan_split(root, "test")

    def read_image(self, path: Path) -> np.ndarray:
        return read_gray(path)

    def process(self, sample, size: int | None):
        """(image at `size`, packed (C, H, W/8) masks or None, original (H, W), warnings): run by the cache's
        worker processes, so the layout is small and picklable."""
        image = read_gray(sample.image)
        orig_hw = image.shape
        image = resize_image(image, size)
        if sample.annotation is None:
            return image, None, orig_hw, []
        polygons, warnings = read_polygons(sample.annotation, self.classes, *orig_hw)
        masks = rasterize(polygons, len(self.classes), orig_hw, image.shape)
        return image, np.packbits(masks, axis=2), orig_hw, warnings

    def meta(self, root) -> dict:
        return read_meta(root)

    def write_pseudo_labels(self, predictions, out, threshold: float, min_confidence: float, info: dict):
        """A pseudo-label folder in the training layout; returns (report, summary line)."""
        report = pseudo.write_pseudo_labels(predictions, out, self.classes, threshold, min_confidence, info)
        how = "hard-linked" if report.linked == len(report.kept) else f"{report.linked} hard-linked, the rest copied"
        return report, f"wrote {out}: {len(report.kept)} images ({how}) x up to {len(self.classes)} polygons"

    def check_pseudo_out(self, out) -> Path:
        """The --out of pseudo_label.py, checked before any model is loaded."""
        return check_new_folder(check_output_folder(out))
