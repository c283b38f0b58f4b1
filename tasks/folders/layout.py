"""Image and mask folders (`task.format: folders`), configured by task.folders (settings.py): Pascal VOC 2012,
MMSegmentation, Kaggle-style flat folders, a mask folder per class; images of any size, different sizes in one
set. Modes: multiclass (a label map per image, void = task.ignore_index), binary (one foreground class, masks
0/1 or 0/255) and multilabel (`masks/<class>/<stem>.png`). Splits: the train and val splits (`data.split:
files`), or k-fold over every labelled image stratified by the classes present. The submission is a folder of
PNG masks in the set's own encoding (submission.py); pseudo-labels are a flat folders set (pseudo.py); the
synthetic generator writes Pascal VOC's layout (synthetic.py)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np

from data.splits import stratified_kfold
from tasks.folders import pseudo, synthetic
from tasks.folders.reader import (
    FolderSample,
    FolderScanner,
    MaskEncoding,
    default_encoding,
    encoding_of,
    read_binary,
    read_image,
    read_label_map,
)
from tasks.folders.settings import PRESETS, resolve
from utils.errors import ConfigError, DataError
from utils.files import check_new_folder
from utils.images import resize_image

VAL_SHARE = 0.2  # of the synthetic set's labelled images, in the val split
PROBED_MASKS = 64  # binary sets: masks looked at for the foreground value (the first non-empty one decides)


class FoldersLayout:
    name = "folders"
    modes = ("multiclass", "binary", "multilabel")  # the task modes it can feed
    submission = "masks"

    def __init__(self, task):
        self.classes = list(task.classes)
        self.mode = task.mode
        self.settings = resolve(task.folders, len(self.classes))
        self.channels = self.settings.channels
        self.label_kind = "map" if task.mode == "multiclass" else "bits"
        self.ignore_index = task.ignore_index if task.mode == "multiclass" else None  # void: label maps only
        self.splits = ("kfold", "files") if self.settings.has_splits else ("kfold",)

    @property
    def cache_id(self) -> str:
        """The folder settings and mode change what the cache holds."""
        return f"{self.name}-{self.mode}-{self.ignore_index}-{self.settings.fingerprint()}"

    def scanner(self, root) -> FolderScanner:
        return FolderScanner(root, self.settings, self.classes, per_class_masks=self.mode == "multilabel")

    def ensure(self, data, progress: bool) -> None:
        """The synthetic Pascal VOC set (data.synthetic.ids labelled images, a fifth of them the val split, test_ids
        test images, sides of 0.6..1 x size px), generated into data.root when its train list is missing."""
        if data.synthetic is None:
            return
        voc = PRESETS["voc"]
        if self.mode != "multiclass" or any(getattr(self.settings, k) != voc[k] for k in ("images", "masks",
                                                                                           "split_lists")):
            raise ConfigError("data.synthetic: the built-in generator writes Pascal VOC's layout of label maps; use "
                              "task.folders.preset: voc with task.mode: multiclass, or data.synthetic: null")
        if len(self.classes) > len(synthetic.VOC_CLASSES):
            raise ConfigError(f"data.synthetic: the generator draws at most {len(synthetic.VOC_CLASSES)} classes, "
                              f"task.classes has {len(self.classes)}")
        root = Path(data.root)
        if not (root / voc["split_lists"] / f"{self.settings.train_split}.txt").is_file():
            s = data.synthetic
            print(f"generating the synthetic Pascal VOC dataset into {root} ({s.ids} labelled images, {s.test_ids} "
                  f"test, up to {s.size}px)")
            val = max(1, round(s.ids * VAL_SHARE))
            synthetic.generate(root, train=s.ids - val, val=val, test=s.test_ids, size=s.size, seed=s.seed,
                               num_classes=len(self.classes), progress=progress, names=synthetic.CONFIG_NAMES)

    def fold(self, data, seed: int) -> tuple[list, np.ndarray, np.ndarray, list[str]]:
        """(samples, train indices, validation indices, warnings): the train and val splits (`files`), or fold
        data.fold of k over every labelled image, stratified by the classes each holds."""
        scanner, s = self.scanner(data.root), self.settings
        if data.split == "files":
            train, val = scanner.labelled([s.train_split]), scanner.labelled([s.val_split])
            for split, scan in ((s.train_split, train), (s.val_split, val)):
                if not scan.samples:
                    raise DataError(f"{data.root}: the {split} split holds no labelled images")
            n = len(train.samples)
            return (train.samples + val.samples, np.arange(n), np.arange(n, n + len(val.samples)),
                    train.warnings + val.warnings)
        pool = scanner.labelled([s.train_split, s.val_split] if s.has_splits else None)
        if not pool.samples:
            raise DataError(f"{data.root}: no labelled images (an image with a mask in "
                            f"{s.folder(Path(data.root), 'masks', s.train_split)})")
        train_idx, val_idx = stratified_kfold(self.class_presence(pool.samples), data.n_splits, data.fold, seed)
        return pool.samples, train_idx, val_idx, pool.warnings

    def class_presence(self, samples: list[FolderSample]) -> np.ndarray:
        """(N, C) 0/1: the classes each labelled image holds (void counts for none), read from its masks."""
        presence = np.zeros((len(samples), len(self.classes)), np.uint8)
        for i, sample in enumerate(samples):
            if self.label_kind == "map":
                labels = self._labels(sample, None)
                presence[i] = np.bincount(labels.reshape(-1), minlength=256)[:len(self.classes)] > 0
            else:
                presence[i] = [plane.any() for plane in self._planes(sample, None)]
        return presence

    def pseudo_samples(self, data, source: str) -> list:
        """A folder written by pseudo_label.py: images/ and masks/ side by side, every image labelled."""
        flat = dataclasses.replace(self.settings, images="images", masks="masks", image_suffix=None,
                                   mask_suffix=".png", split_lists=None)
        scan = FolderScanner(source, flat, self.classes, per_class_masks=self.mode == "multilabel").labelled(None)
        if not scan.samples:
            raise DataError(f"{source}: no pseudo-labelled images (images/ with masks/ as pseudo_label.py writes)")
        return scan.samples

    def test_samples(self, root) -> list:
        """The test images, each carrying the set's mask encoding (the submission writes its masks that way)."""
        scan = self.scanner(root).test()
        if not scan.samples:
            s = self.settings
            where = (f"the {s.test_split} split" if s.has_splits else
                     f"{s.folder(Path(root), 'images', None)} (images without a mask)")
            raise DataError(f"{root}: no test images in {where}")
        for line in scan.warnings:
            print(f"warning: {line}")
        encoding = self.mask_encoding(root)
        return [dataclasses.replace(sample, encoding=encoding) for sample in scan.samples]

    def mask_encoding(self, root) -> MaskEncoding:
        """How the set's masks are stored (the first labelled mask's PNG mode and palette; binary masks: the
        foreground value), or task.folders.palette / grayscale when the set has no labelled mask."""
        s, binary = self.settings, self.label_kind == "bits"
        try:
            samples = self.scanner(root).labelled([s.train_split, s.val_split] if s.has_splits else None).samples
        except DataError as e:  # a test-only root, say: nothing to copy
            print(f"warning: no training mask to copy the encoding from ({e}); writing "
                  f"{'palette' if s.palette else 'grayscale'} PNGs")
            samples = []
        masks = [m for sample in samples for m in (sample.annotation if isinstance(sample.annotation, tuple)
                                                   else (sample.annotation,))]
        if not masks:
            return default_encoding(s.palette, s.void_color, self.ignore_index, binary)
        return encoding_of(masks[0], s.palette, binary, masks[:PROBED_MASKS])

    def read_image(self, path: Path) -> np.ndarray:
        return read_image(path, self.channels)

    def process(self, sample: FolderSample, size: int | None):
        """(image at `size`, (H, W) uint8 labels or packed (C, H, W/8) masks or None, original (H, W), warnings):
        run by the cache's worker processes."""
        image = read_image(sample.image, self.channels)
        orig_hw = image.shape[:2]
        image = resize_image(image, size)
        if sample.annotation is None:
            return image, None, orig_hw, []
        hw = image.shape[:2]
        if self.label_kind == "map":
            return image, _resized(self._labels(sample, orig_hw), hw), orig_hw, []
        planes = np.stack([_resized(p.view(np.uint8), hw) for p in self._planes(sample, orig_hw)])
        return image, np.packbits(planes, axis=2), orig_hw, []

    def _labels(self, sample: FolderSample, image_hw) -> np.ndarray:
        s = self.settings
        return read_label_map(sample.annotation, len(self.classes), self.ignore_index, s.palette, s.void_color,
                              image_hw, sample.image)

    def _planes(self, sample: FolderSample, image_hw) -> list[np.ndarray]:
        paths = sample.annotation if isinstance(sample.annotation, tuple) else (sample.annotation,)
        return [read_binary(path, image_hw, sample.image, self.settings.palette) for path in paths]

    def meta(self, root) -> dict:
        return {}

    def write_pseudo_labels(self, predictions, out, threshold: float, min_confidence: float, info: dict):
        """A flat folders set (images/ linked, masks/ in the set's encoding); returns (report, summary line)."""
        report = pseudo.write_pseudo_folder(predictions, out, self, threshold, min_confidence, info)
        how = "hard-linked" if report.linked == len(report.kept) else f"{report.linked} hard-linked, the rest copied"
        return report, (f"wrote {out}: {len(report.kept)} images ({how}) with their masks; train on it with "
                        f"data.pseudo_roots: [{out}]")

    def check_pseudo_out(self, out) -> Path:
        return check_new_folder(out)


def _resized(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """A label map or 0/1 plane at (H, W), by nearest neighbour (labels are never interpolated)."""
    if labels.shape == tuple(hw):
        return labels
    return cv2.resize(labels, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
