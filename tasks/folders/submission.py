"""`task.submission: masks`: a folder of PNG masks, one per test image, named by its key (`DIR/<stem>.png`;
multilabel: `DIR/<class>/<stem>.png`), at that image's own size and in the encoding of the set's training masks
(palette PNGs keep their palette; binary masks their foreground value, 1 or 255). The folder is built under a
temporary name and renamed when complete.

Validated by `inference.py --check DIR --data ROOT --config CFG`: every test image's mask exactly once and nothing
else, each at its image's size, with class labels only (a prediction holds no void). Hard voting of several such
folders (ensemble.py --csvs DIR ...): the per-pixel majority label (multiclass; a tie goes to the lower label) or
the pixels where at least --min-votes folders agree (binary, multilabel).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modes.crf import dense_crf
from modes.multiclass import dense_probs
from tasks.folders.reader import FolderSample, image_size, read_binary, read_label_map, write_mask
from utils.errors import DataError, UserError
from utils.files import atomic_folder, check_new_folder, write_error

MAX_PROBLEMS = 50


class MasksSubmission:
    name = "masks"
    layouts = ("folders",)  # whose test split and mask encoding it follows

    def __init__(self, layout):
        self.layout = layout
        self.classes = list(layout.classes)
        self.per_class = layout.mode == "multilabel"
        self.label_map = layout.label_kind == "map"

    def test_samples(self, root) -> list:
        return self.layout.test_samples(root)

    def check_out(self, out) -> Path:
        """The output, before any model is loaded: a new (or empty) folder."""
        return check_new_folder(out)

    def writer(self, out, thresholds=None, crf=None, save_masks=None, read_image=None,
               postprocess=None) -> _MaskWriter:
        if postprocess is not None:
            raise UserError("predict.postprocess: not available for mask-folder submissions yet (hand-bone and "
                            "trash CSVs only); leave it out")
        if save_masks is not None:
            raise UserError("--save-masks: the masks submission is itself a folder of PNG masks; leave it out")
        return _MaskWriter(self, out, thresholds, crf, read_image or self.layout.read_image)

    def files(self, sample: FolderSample) -> list[str]:
        """The mask file(s) of a test image, relative to the submission folder."""
        if self.per_class:
            return [f"{name}/{sample.key}.png" for name in self.classes]
        return [f"{sample.key}.png"]

    def write(self, folder: Path, sample: FolderSample, masks: np.ndarray) -> None:
        """(H, W) labels (label maps) or (C, H, W) 0/1 planes, in the set's encoding."""
        s = self.layout.settings
        try:
            for name, plane in zip(self.files(sample), [masks] if self.label_map else masks):
                write_mask(folder / name, plane, sample.encoding, s.palette)
        except OSError as e:
            raise write_error(folder / self.files(sample)[0], e) from None

    def read(self, folder: Path, sample: FolderSample, image_hw=None) -> np.ndarray:
        """A submission's (H, W) labels (classes only) or (C, H, W) bool planes of one test image."""
        s = self.layout.settings
        paths = [folder / name for name in self.files(sample)]
        if self.label_map:
            return read_label_map(paths[0], len(self.classes), None, s.palette, None, image_hw, sample.image)
        return np.stack([read_binary(p, image_hw, sample.image, s.palette) for p in paths])

    def validate(self, path, root) -> list[str]:
        """Problems that make the folder a wrong submission for ROOT's test images; [] if none."""
        folder = Path(path)
        if not folder.is_dir():
            return [f"{folder}: not a folder (the masks submission is a folder of PNGs, one per test image)"]
        samples = self.test_samples(root)
        expected = {name: sample for sample in samples for name in self.files(sample)}
        found = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
                 if p.is_file() and not p.name.startswith(".")}
        problems: list[str] = []
        extra, missing = sorted(found - set(expected)), sorted(set(expected) - found)
        if extra:
            problems.append(f"{folder}: {len(extra)} file(s) that are no test image's mask: {', '.join(extra[:5])}")
        if missing:
            problems.append(f"{folder}: {len(missing)} test image(s) have no mask: {', '.join(missing[:5])}")
        for sample in samples:
            if any(name not in found for name in self.files(sample)):
                continue
            try:
                self.read(folder, sample, image_size(sample.image))
            except DataError as e:
                problems.append(str(e))
            if len(problems) >= MAX_PROBLEMS:
                problems.append("... (stopped at this many problems)")
                break
        return problems

    def decode(self, path, root):
        """Yield (test sample, (C, H, W) bool masks at its size) of a submission folder; a label map's background
        plane is left empty (it is not drawn)."""
        folder = Path(path)
        for sample in self.test_samples(root):
            masks = self.read(folder, sample)
            if self.label_map:
                masks = masks[None] == np.arange(len(self.classes), dtype=np.uint8)[:, None, None]
                masks[0] = False
            yield sample, masks

    def hard_vote(self, paths: list, min_votes: int | None, out, root) -> str:
        """Label maps: each pixel's majority label (a tie goes to the lower label; --min-votes does not apply);
        binary and multilabel masks: a pixel is kept where at least `min_votes` folders agree."""
        if not root:
            raise UserError("--csvs with mask folders needs --data ROOT (the test images and their mask encoding)")
        if self.label_map and min_votes is not None:
            raise UserError("--min-votes: label maps vote each pixel's majority label; leave it out")
        if not self.label_map and (min_votes is None or not 1 <= min_votes <= len(paths)):
            raise UserError(f"--min-votes: give a number between 1 and the {len(paths)} submissions")
        for path in paths:
            problems = self.validate(path, root)
            if problems:
                raise DataError(f"{problems[0]} ({len(problems)} problem(s) in {path}; see inference.py --check)")
        out = check_new_folder(out)
        samples = self.test_samples(root)
        with atomic_folder(out) as tmp:
            for sample in samples:
                votes = [self.read(Path(p), sample) for p in paths]
                if self.label_map:
                    counts = np.stack([sum((v == c) for v in votes) for c in range(len(self.classes))])
                    merged = counts.argmax(0).astype(np.uint8)  # the first maximum: the lower label
                else:
                    merged = (sum(v.astype(np.int32) for v in votes) >= min_votes).astype(np.uint8)
                self.write(tmp, sample, merged)
        rule = ("per-pixel majority label" if self.label_map
                else f"pixels kept where at least {min_votes} agree")
        return f"wrote {out}: {len(samples)} images, {rule} of {len(paths)} submissions"


class _MaskWriter:
    """Per image: argmax (label maps, after DenseCRF when configured) or `p > threshold` inside the boxes where a
    mask can be positive (`prepare`, on the prediction's device); then the PNG(s) (`write`, in a background
    thread). The folder appears under its name only when every image is written."""

    def __init__(self, submission: MasksSubmission, out, thresholds, crf, read_image):
        self.submission, self.out = submission, Path(out)
        self.thresholds, self.crf, self.read_image = thresholds, crf, read_image
        self._folder = self.tmp = None

    def __enter__(self):
        check_new_folder(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._folder = atomic_folder(self.out)
        self.tmp = self._folder.__enter__()
        return self

    def prepare(self, sample, probs):
        if self.submission.label_map:
            mean = dense_probs(probs)
            if self.crf is not None:
                c = self.crf
                mean = torch.from_numpy(dense_crf(self.read_image(sample.image), mean.cpu().numpy(), c.iterations,
                                                  c.gaussian_sxy, c.gaussian_compat, c.bilateral_sxy,
                                                  c.bilateral_srgb, c.bilateral_compat))
            return sample, mean.argmax(0).to(torch.uint8).cpu().numpy()
        thresholds = 0.5 if self.thresholds is None else self.thresholds.to(probs.device)
        crops = [None if m is None else (m[0], m[1].cpu().numpy()) for m in probs.masks(thresholds)]
        planes = np.zeros((len(crops), *probs.size), np.uint8)
        for plane, item in zip(planes, crops):
            if item is not None:
                (r0, r1, c0, c1), crop = item
                plane[r0:r1, c0:c1] = crop
        return sample, planes

    def write(self, payload) -> None:
        sample, masks = payload
        self.submission.write(self.tmp, sample, masks)

    def __exit__(self, exc_type, exc, tb):
        return self._folder.__exit__(exc_type, exc, tb)
