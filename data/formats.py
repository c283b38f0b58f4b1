"""Dataset formats (`task.format`): how samples are found, split, read and rasterized for the cache.

A format is a small picklable object (the cache's worker processes call `process`). The pipeline, cache, datasets
and inference ask it; adding a format means one class here (or in its own module) and one entry in FORMATS.

- handbone: `ROOT/{train,test}/DCM/IDxxx/*.png` + polygon JSONs (data/handbone.py); grayscale; one bit plane per
  class; GroupKFold by person.
- coco: `ROOT/{train_all,train,val,test}.json` (data/coco.py); RGB; one label map; `data.split: files` (train.json
  / val.json) or `kfold` (multilabel-stratified over train_all.json).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from utils.errors import ConfigError, DataError


class HandboneFormat:
    name = "handbone"
    channels = 1
    label_kind = "bits"
    splits = ("kfold",)  # the values of data.split it knows

    def ensure(self, cfg, progress: bool) -> None:
        root = Path(cfg.root)
        if cfg.synthetic is not None and not (root / "train").is_dir():
            from data.synthetic import CONFIG_NAMES, generate

            s = cfg.synthetic
            print(f"generating the synthetic dataset into {root} ({s.ids} persons, {s.test_ids} test, {s.size}px)")
            generate(root, ids=s.ids, test_ids=s.test_ids, size=s.size, seed=s.seed, progress=progress,
                     names=CONFIG_NAMES)

    def fold(self, cfg, seed: int) -> tuple[list, np.ndarray, np.ndarray, list[str]]:
        """(samples, train indices, validation indices, warnings) of data.fold."""
        from data.handbone import scan_split
        from data.splits import group_kfold

        samples = scan_split(cfg.root, "train")
        train_idx, val_idx = group_kfold([s.group for s in samples], cfg.n_splits, cfg.fold)
        return samples, train_idx, val_idx, []

    def pseudo_samples(self, cfg, source: str) -> list:
        from data.handbone import scan_split

        return scan_split(source, "train")

    def test_samples(self, root) -> list:
        from data.handbone import scan_split

        return scan_split(root, "test")

    def read_image(self, path: Path) -> np.ndarray:
        from data.handbone import read_image

        return read_image(path)

    def process(self, sample, classes: list[str], size: int | None):
        """(image at `size`, packed (C, H, W/8) masks or None, original (H, W), warnings)."""
        from data.handbone import rasterize, read_image, read_polygons, resize_image

        image = read_image(sample.image)
        orig_hw = image.shape
        image = resize_image(image, size)
        if sample.annotation is None:
            return image, None, orig_hw, []
        polygons, warnings = read_polygons(sample.annotation, classes, *orig_hw)
        masks = rasterize(polygons, len(classes), orig_hw, image.shape)
        return image, np.packbits(masks, axis=2), orig_hw, warnings

    def meta(self, root) -> dict:
        from data.handbone import read_meta

        return read_meta(root)

    def write_pseudo_labels(self, predictions, out, classes: list[str], threshold: float, min_confidence: float,
                            info: dict):
        """A pseudo-label folder in the training layout (data/pseudo.py); returns (report, summary line)."""
        from data.pseudo import write_pseudo_labels

        report = write_pseudo_labels(predictions, out, classes, threshold, min_confidence, info)
        how = "hard-linked" if report.linked == len(report.kept) else f"{report.linked} hard-linked, the rest copied"
        return report, f"wrote {out}: {len(report.kept)} images ({how}) x up to {len(classes)} polygons"


class CocoFormat:
    name = "coco"
    channels = 3
    label_kind = "map"
    splits = ("kfold", "files")

    def __init__(self, classes: list[str]):
        self.classes = list(classes)

    def ensure(self, cfg, progress: bool) -> None:
        """The synthetic trash set (data.synthetic.ids labelled images, test_ids test images, size px)."""
        root = Path(cfg.root)
        if cfg.synthetic is not None and not (root / "train_all.json").is_file():
            from data.synthetic_coco import CONFIG_NAMES, generate

            s = cfg.synthetic
            print(f"generating the synthetic COCO dataset into {root} ({s.ids} images, {s.test_ids} test, "
                  f"{s.size}px)")
            generate(root, train=s.ids, test=s.test_ids, size=s.size, seed=s.seed, progress=progress,
                     names=CONFIG_NAMES)

    def fold(self, cfg, seed: int) -> tuple[list, np.ndarray, np.ndarray, list[str]]:
        from data.coco import class_presence, read_coco, split_path, stratified_kfold

        if cfg.split == "files":
            train = read_coco(split_path(cfg.root, "train"), cfg.root, self.classes)
            val = read_coco(split_path(cfg.root, "val"), cfg.root, self.classes)
            samples = train.samples + val.samples
            n = len(train.samples)
            return (samples, np.arange(n), np.arange(n, len(samples)), train.warnings + val.warnings)
        pool = read_coco(split_path(cfg.root, "train_all"), cfg.root, self.classes)
        presence = class_presence(pool.samples, len(self.classes))
        train_idx, val_idx = stratified_kfold(presence, cfg.n_splits, cfg.fold, seed)
        return pool.samples, train_idx, val_idx, pool.warnings

    def pseudo_samples(self, cfg, source: str) -> list:
        """A COCO JSON written by pseudo_label.py; its file_names are relative to data.root."""
        from data.coco import read_coco

        path = Path(source)
        if path.is_dir():
            path = path / "pseudo.json"
        return read_coco(path, cfg.root, self.classes).samples

    def test_samples(self, root) -> list:
        from data.coco import read_coco, split_path

        samples = read_coco(split_path(root, "test"), root, self.classes, labelled=False).samples
        if not samples:
            raise DataError(f"{split_path(root, 'test')}: lists no images")
        return samples

    def read_image(self, path: Path) -> np.ndarray:
        from data.coco import read_rgb

        return read_rgb(path)

    def process(self, sample, classes: list[str], size: int | None):
        """(RGB image at `size`, (H, W) uint8 label map or None, original (H, W), warnings)."""
        from data.coco import label_map, read_rgb

        image = read_rgb(sample.image)
        orig_hw = image.shape[:2]
        if orig_hw != (sample.height, sample.width):
            raise DataError(f"{sample.image}: is {orig_hw[1]}x{orig_hw[0]}, its JSON says "
                            f"{sample.width}x{sample.height} (image {sample.image_id})")
        if size is not None and orig_hw != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        if sample.annotation is None:
            return image, None, orig_hw, []
        return image, label_map(sample, image.shape[:2]), orig_hw, []

    def meta(self, root) -> dict:
        return {}

    def write_pseudo_labels(self, predictions, out, classes: list[str], threshold: float, min_confidence: float,
                            info: dict):
        """A COCO JSON of the competition's schema (data/pseudo_coco.py); confidence = mean winning probability;
        `threshold` does not apply (argmax). Returns (report, summary line)."""
        from data.pseudo_coco import write_pseudo_coco
        from trainer.modes import dense_probs

        def labelled():
            for sample, probs in predictions:
                mean = dense_probs(probs)
                top, labels = mean.max(0)
                yield sample, labels.to(torch.uint8).cpu().numpy(), float(top.mean())

        report = write_pseudo_coco(labelled(), out, classes, min_confidence, info)
        return report, (f"wrote {out}: {len(report.kept)} images, {report.annotations} polygons; train on it with "
                        f"data.pseudo_roots: [{out}]")


FORMATS = {"handbone": lambda classes: HandboneFormat(), "coco": CocoFormat}


def build_format(name: str, classes: list[str]):
    if name not in FORMATS:
        raise ConfigError(f"task.format: unknown format {name!r} (choose from {', '.join(FORMATS)})")
    return FORMATS[name](classes)
