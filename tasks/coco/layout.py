"""The trash competition's COCO layout (`task.format: coco`): `ROOT/{train_all,train,val,test}.json`, images at the
JSON's `file_name` relative to ROOT (reader.py); RGB; one label map per image; `data.split: files` (train.json /
val.json) or `kfold` (multilabel-stratified over train_all.json); the PredictionString CSV (submission.py);
pseudo-labels as a COCO JSON (pseudo.py); the synthetic generator (synthetic.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from data.splits import stratified_kfold
from modes.multiclass import dense_probs
from tasks.coco import pseudo, synthetic
from tasks.coco.reader import check_header_sizes, class_presence, label_map, read_coco, size_error, split_path
from utils.errors import DataError, UserError
from utils.files import check_output_folder
from utils.images import read_rgb, resize_image


class CocoLayout:
    name = "coco"
    channels = 3
    label_kind = "map"  # one uint8 label map: the multiclass mode's targets
    modes = ("multiclass",)  # the task modes it can feed
    ignore_index = None  # every pixel is a class (unannotated ones the background)
    splits = ("kfold", "files")
    submission = "trash"

    def __init__(self, task):
        self.classes = list(task.classes)

    @property
    def cache_id(self) -> str:
        return self.name

    def ensure(self, data, progress: bool) -> None:
        """The synthetic trash set (data.synthetic.ids labelled images, test_ids test images, size px)."""
        root = Path(data.root)
        if data.synthetic is not None and not (root / "train_all.json").is_file():
            s = data.synthetic
            print(f"generating the synthetic COCO dataset into {root} ({s.ids} images, {s.test_ids} test, "
                  f"{s.size}px)")
            synthetic.generate(root, train=s.ids, test=s.test_ids, size=s.size, seed=s.seed, progress=progress,
                               names=synthetic.CONFIG_NAMES)

    def fold(self, data, seed: int) -> tuple[list, np.ndarray, np.ndarray, list[str]]:
        if data.split == "files":
            train = read_coco(split_path(data.root, "train"), data.root, self.classes)
            val = read_coco(split_path(data.root, "val"), data.root, self.classes)
            samples = train.samples + val.samples
            n = len(train.samples)
            return (samples, np.arange(n), np.arange(n, len(samples)), train.warnings + val.warnings)
        pool = read_coco(split_path(data.root, "train_all"), data.root, self.classes)
        presence = class_presence(pool.samples, len(self.classes))
        train_idx, val_idx = stratified_kfold(presence, data.n_splits, data.fold, seed)
        return pool.samples, train_idx, val_idx, pool.warnings

    def pseudo_samples(self, data, source: str) -> list:
        """A COCO JSON written by pseudo_label.py; its file_names are relative to data.root."""
        path = Path(source)
        if path.is_dir():
            path = path / "pseudo.json"
        return read_coco(path, data.root, self.classes).samples

    def test_samples(self, root) -> list:
        """test.json's images, each on disk once and of the size test.json gives (read from the headers)."""
        samples = read_coco(split_path(root, "test"), root, self.classes, labelled=False).samples
        if not samples:
            raise DataError(f"{split_path(root, 'test')}: lists no images")
        check_header_sizes(samples)
        return samples

    def read_image(self, path: Path) -> np.ndarray:
        return read_rgb(path)

    def process(self, sample, size: int | None):
        """(RGB image at `size`, (H, W) uint8 label map or None, original (H, W), warnings)."""
        image = read_rgb(sample.image)
        orig_hw = image.shape[:2]
        if orig_hw != (sample.height, sample.width):
            raise size_error(sample, orig_hw)
        image = resize_image(image, size)
        if sample.annotation is None:
            return image, None, orig_hw, []
        return image, label_map(sample, image.shape[:2]), orig_hw, []

    def meta(self, root) -> dict:
        return {}

    def write_pseudo_labels(self, predictions, out, threshold: float, min_confidence: float, info: dict):
        """A COCO JSON of the competition's schema; confidence = mean winning probability; `threshold` does not
        apply (argmax). Returns (report, summary line)."""
        def labelled():
            for sample, probs in predictions:
                top, labels = dense_probs(probs).max(0)
                yield sample, labels.to(torch.uint8).cpu().numpy(), float(top.mean())

        report = pseudo.write_pseudo_coco(labelled(), out, self.classes, min_confidence, info)
        return report, (f"wrote {out}: {len(report.kept)} images, {report.annotations} polygons; train on it with "
                        f"data.pseudo_roots: [{out}]")

    def check_pseudo_out(self, out) -> Path:
        """The --out of pseudo_label.py (a new COCO JSON file), checked before any model is loaded."""
        out = Path(out)
        check_output_folder(out.parent)
        if out.exists() or out.is_symlink():
            raise UserError(f"{out}: already exists; choose a new file for the pseudo-labels")
        return out
