"""The trash competition's submission CSV: write atomically, validate against test.json, save label-map PNGs.

Layout: header ``image_id,PredictionString``; one row per image of ``test.json``, in its order; ``image_id`` is the
image's ``file_name``; ``PredictionString`` is the argmax label map resized to 256x256 (nearest), flattened row by
row, labels joined by single spaces.
"""
from __future__ import annotations

import contextlib
import csv
import os
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import torch

from modes.crf import dense_crf
from modes.multiclass import argmax_labels, dense_probs
from tasks.coco.reader import check_file_name, read_coco_json, size_error, split_path
from utils.csvfile import csv_rows
from utils.errors import DataError, UserError
from utils.files import (
    atomic_folder,
    check_output_file,
    make_folder,
    remove_stale_temps,
    write_bytes_atomic,
    write_error,
)

HEADER = ("image_id", "PredictionString")
SUBMISSION_SIZE = 256


def to_submission_size(labels: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (256, 256) by nearest neighbour (labels must never be interpolated)."""
    labels = np.asarray(labels, dtype=np.uint8)
    if labels.shape == (SUBMISSION_SIZE, SUBMISSION_SIZE):
        return labels
    return cv2.resize(labels, (SUBMISSION_SIZE, SUBMISSION_SIZE), interpolation=cv2.INTER_NEAREST)


def submission_lines(count: int) -> torch.Tensor:
    """The rows (or columns) of an image `count` pixels tall (or wide) that to_submission_size reads, in order:
    OpenCV's own nearest resize of the line numbers, so the CSV's labels can be computed at those pixels only."""
    if count == SUBMISSION_SIZE:
        return torch.arange(count)
    lines = cv2.resize(np.arange(count, dtype=np.float32)[None], (SUBMISSION_SIZE, 1), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(lines[0].astype(np.int64))


class TrashSubmissionWriter:
    """Rows go to a temporary file that replaces `path` only when the `with` block exits normally; a failed write
    (a full or read-only disk) is one line naming the CSV, and leaves no temporary file."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._tmp = f"{self.path}.{os.getpid()}.tmp"
        self._file = None
        self._writer = None
        self._images: set[str] = set()

    def __enter__(self):
        remove_stale_temps(Path(self.path))
        try:
            self._file = open(self._tmp, "w", encoding="utf-8", newline="")
            self._writer = csv.writer(self._file, lineterminator="\n")
            self._writer.writerow(HEADER)
        except OSError as e:
            self.__exit__(type(e), e, None)
            raise write_error(self.path, e) from None
        return self

    def write_image(self, image_id: str, labels: np.ndarray) -> None:
        if self._writer is None:
            raise RuntimeError("TrashSubmissionWriter.write_image called outside its `with` block")
        if image_id in self._images:
            raise ValueError(f"{image_id}: image written twice")
        self._images.add(image_id)
        try:
            self._writer.writerow([image_id, " ".join(map(str, to_submission_size(labels).reshape(-1).tolist()))])
        except OSError as e:
            raise write_error(self.path, e) from None

    def __exit__(self, exc_type, exc, tb):
        file, self._file, self._writer = self._file, None, None
        try:
            if file is not None:
                file.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        except OSError as e:  # the last buffered rows hit a full disk, or the rename failed
            if exc_type is None:
                raise write_error(self.path, e) from None
        finally:
            if os.path.exists(self._tmp):
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
        return False


def save_label_png(folder: str | Path, file_name: str, labels: np.ndarray) -> Path:
    """Write an (H, W) label map as an 8-bit PNG named after the image (`batch_01_vt/0001.jpg` ->
    `folder/batch_01_vt/0001.png`), atomically; a name that would leave `folder` is refused."""
    check_file_name(Path(folder), repr(file_name), file_name)
    path = Path(folder) / Path(file_name).with_suffix(".png")
    ok, data = cv2.imencode(".png", np.asarray(labels, dtype=np.uint8))
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    make_folder(path.parent)
    write_bytes_atomic(path, data.tobytes())
    return path


def test_image_ids(test_json: str | Path) -> list[str]:
    """The `file_name`s of test.json's images, in its order (the submission order); each a relative path, once."""
    path = Path(test_json)
    data = read_coco_json(path, kind="test")
    names: dict[str, int] = {}
    for n, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "file_name" not in im:
            raise DataError(f"{path}: image #{n} has no file_name")
        name = check_file_name(path, im.get("id", f"#{n}"), im["file_name"])
        if name in names:
            raise DataError(f"{path}: images #{names[name]} and #{n} have the same file_name {name!r}")
        names[name] = n
    if not names:
        raise DataError(f"{path}: lists no images")
    return list(names)


def validate_trash_submission(csv_path, test_json, num_classes: int, max_problems: int = 50) -> list[str]:
    """Problems that would make the competition reject or misread `csv_path`; [] if none.

    Checks the header, two fields per row, one row per test.json image in its order, and that every
    PredictionString holds 256*256 integer labels in 0..num_classes-1.
    """
    expected = test_image_ids(test_json)
    problems: list[str] = []
    dropped = 0

    def add(line: str) -> None:
        nonlocal dropped
        if len(problems) < max_problems:
            problems.append(line)
        else:
            dropped += 1

    want = SUBMISSION_SIZE * SUBMISSION_SIZE
    seen: list[str] = []
    with csv_rows(csv_path) as reader:
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(HEADER):
            return [f"{csv_path}: line 1: header is {','.join(header or [])[:80]!r}, "
                    f"expected {','.join(HEADER)!r}"]
        for row in reader:
            line = reader.line_num
            if len(row) != 2:
                add(f"{csv_path}: line {line}: {len(row)} fields, expected 2 ({','.join(HEADER)})")
                continue
            image_id, text = row
            seen.append(image_id)
            values = text.split()
            if len(values) != want:
                add(f"{csv_path}: line {line}: image {image_id!r}: {len(values)} labels, expected {want} "
                    f"({SUBMISSION_SIZE}x{SUBMISSION_SIZE})")
                continue
            try:
                labels = np.array(values, dtype=np.int64)
            except ValueError:
                add(f"{csv_path}: line {line}: image {image_id!r}: PredictionString holds a non-integer")
                continue
            if labels.min() < 0 or labels.max() >= num_classes:
                add(f"{csv_path}: line {line}: image {image_id!r}: label {int(labels.max())} outside "
                    f"0..{num_classes - 1}")
    expected_set, seen_set = set(expected), set(seen)
    unknown = [n for n in seen if n not in expected_set]
    missing = [n for n in expected if n not in seen_set]
    duplicated = sorted(n for n, count in Counter(seen).items() if count > 1)
    if unknown:
        add(f"{csv_path}: {len(unknown)} image(s) not in {test_json}: {', '.join(unknown[:5])}")
    if missing:
        add(f"{csv_path}: {len(missing)} test image(s) have no row: {', '.join(missing[:5])}")
    if duplicated:
        add(f"{csv_path}: image(s) with more than one row: {', '.join(duplicated[:5])}")
    if not (unknown or missing or duplicated) and seen != expected:
        i = next(i for i, (a, b) in enumerate(zip(seen, expected)) if a != b)
        add(f"{csv_path}: rows are not in test.json order: row {i + 1} is {seen[i]!r}, expected {expected[i]!r}")
    if dropped:
        problems.append(f"... and {dropped} more problem(s)")
    return problems


def read_trash_submission(csv_path, num_classes: int) -> dict[str, np.ndarray]:
    """{image_id: (256, 256) uint8 labels} in file order; DataError (one line) for the first problem (an image
    given twice is one)."""
    out: dict[str, np.ndarray] = {}
    lines: dict[str, int] = {}
    with csv_rows(csv_path) as reader:
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != list(HEADER):
            raise DataError(f"{csv_path}: line 1: header is not {','.join(HEADER)!r}")
        for row in reader:
            try:
                labels = np.array(row[1].split(), dtype=np.int64)
            except (IndexError, ValueError):
                raise DataError(f"{csv_path}: line {reader.line_num}: not image_id,PredictionString") from None
            if labels.size != SUBMISSION_SIZE ** 2 or labels.min() < 0 or labels.max() >= num_classes:
                raise DataError(f"{csv_path}: line {reader.line_num}: image {row[0]!r}: expected "
                                f"{SUBMISSION_SIZE ** 2} labels in 0..{num_classes - 1}")
            if row[0] in out:
                raise DataError(f"{csv_path}: line {reader.line_num}: image {row[0]!r} has a second row (line "
                                f"{lines[row[0]]}); a vote needs one per image")
            lines[row[0]] = reader.line_num
            out[row[0]] = labels.astype(np.uint8).reshape(SUBMISSION_SIZE, SUBMISSION_SIZE)
    return out


def hard_vote_labels(csv_paths, out_path, num_classes: int) -> int:
    """Per-pixel majority label of several trash submissions (a tie goes to the lowest label), written atomically
    in the first file's image order; every file must list the same images. Returns the number of images."""
    subs = [read_trash_submission(p, num_classes) for p in csv_paths]
    names = list(subs[0])
    for path, sub in zip(csv_paths[1:], subs[1:]):
        if set(sub) != set(names):
            raise DataError(f"{path}: lists other images than {csv_paths[0]}")
    with TrashSubmissionWriter(out_path) as writer:
        for name in names:
            votes = np.zeros((num_classes, SUBMISSION_SIZE, SUBMISSION_SIZE), np.int32)
            for sub in subs:
                votes += np.eye(num_classes, dtype=np.int32)[sub[name]].transpose(2, 0, 1)
            writer.write_image(name, votes.argmax(0).astype(np.uint8))
    return len(names)


# --------------------------------------------------------------------------- the task's submission


class TrashSubmission:
    """`task.submission: trash`: softmax probabilities averaged over TTA, windows and members at each image's own
    size, optionally refined by DenseCRF, then argmax; rows in test.json order."""
    name = "trash"
    header = HEADER  # how --check tells the format of a CSV
    layouts = ("coco",)  # whose test.json it follows

    def __init__(self, layout):
        self.layout = layout
        self.classes = list(layout.classes)

    def test_samples(self, root) -> list:
        """The images of test.json, each found on disk, checked before predicting."""
        return self.layout.test_samples(root)

    def check_out(self, out) -> Path:
        """The output, before any model is loaded: a CSV file in an existing folder."""
        return check_output_file(out)

    def writer(self, out, thresholds=None, crf=None, save_masks=None, read_image=None,
               postprocess=None) -> _LabelWriter:
        """`postprocess`: a modes.postprocess.Postprocess applied to each label map (None: the argmax as is)."""
        return _LabelWriter(out, crf, save_masks, read_image or self.layout.read_image, postprocess)

    def validate(self, path, root) -> list[str]:
        return validate_trash_submission(path, split_path(root, "test"), len(self.classes))

    def decode(self, path, root):
        """Yield (test sample, (C, H, W) bool masks at its size; the background's plane empty) for the images of
        a submission, in file order: the 256x256 labels resized by nearest neighbour."""
        rows = read_trash_submission(path, len(self.classes))
        samples = {s.key: s for s in self.test_samples(root)}
        for key, labels in rows.items():
            if key not in samples:
                raise DataError(f"{path}: image {key!r} is not in {split_path(root, 'test')}")
            sample = samples[key]
            full = cv2.resize(labels, (sample.width, sample.height), interpolation=cv2.INTER_NEAREST)
            masks = full[None] == np.arange(len(self.classes), dtype=np.uint8)[:, None, None]
            masks[0] = False
            yield sample, masks

    def hard_vote(self, paths: list, min_votes: int | None, out, root) -> str:
        """Each pixel's majority label (a tie goes to the lowest label); --min-votes does not apply."""
        if min_votes is not None:
            raise UserError("--min-votes: the trash submission votes each pixel's majority label; leave it out")
        count = hard_vote_labels(paths, out, len(self.classes))
        return f"wrote {out}: {count} images, per-pixel majority label of {len(paths)} submissions"


class _LabelWriter:
    """Per image: the labels (`prepare`, on the prediction's device): without DenseCRF, post-processing and
    --save-masks only the 256x256 pixels the CSV samples, by argmax_labels' quads; with post-processing or
    --save-masks every pixel; with DenseCRF the dense mean probabilities, refined, then argmax. Then the
    post-processing, the row and the optional label PNG (`write`, in a background thread).

    --save-masks DIR is filled as `DIR.tmp-<pid>-<hex>` and renamed when the submission is complete: a failed run
    leaves no half folder (DIR must be missing or empty; inference.py checks it before loading the model)."""

    def __init__(self, out, crf, save_masks, read_image, postprocess=None):
        self.csv = TrashSubmissionWriter(out)
        self.crf, self.read_image = crf, read_image
        self.save_masks = None if save_masks is None else Path(save_masks)
        self.postprocess = postprocess
        self._masks = contextlib.ExitStack()
        self._folder: Path | None = None
        self._pngs: dict[Path, str] = {}

    def __enter__(self):
        if self.save_masks is not None:
            make_folder(self.save_masks.parent)
            try:
                self._folder = self._masks.enter_context(atomic_folder(self.save_masks))
            except OSError as e:
                raise write_error(self.save_masks, e) from None
        self.csv.__enter__()
        return self

    def prepare(self, sample, probs):
        size = tuple(probs.shape[-2:]) if isinstance(probs, torch.Tensor) else probs.size
        if size != (sample.height, sample.width):  # the image decoded at another size than test.json says
            raise size_error(sample, size)
        if self.crf is not None:
            c = self.crf
            mean = torch.from_numpy(dense_crf(self.read_image(sample.image), dense_probs(probs).cpu().numpy(),
                                              c.iterations, c.gaussian_sxy, c.gaussian_compat, c.bilateral_sxy,
                                              c.bilateral_srgb, c.bilateral_compat))
            labels = mean.argmax(0).to(torch.uint8)
        elif isinstance(probs, torch.Tensor):
            labels = probs.argmax(0).to(torch.uint8)
        elif self.save_masks is not None or self.postprocess is not None:  # they need every pixel
            labels = argmax_labels(probs.parts, size)
        else:
            labels = argmax_labels(probs.parts, size, submission_lines(size[0]), submission_lines(size[1]))
        return sample.key, labels.cpu().numpy()

    def write(self, payload) -> None:
        key, labels = payload
        if self.postprocess is not None:
            labels = self.postprocess.labels(labels)
        self.csv.write_image(key, labels)
        if self._folder is not None:
            name = Path(key).with_suffix(".png")
            if name in self._pngs:
                raise DataError(f"--save-masks {self.save_masks}: test images {self._pngs[name]!r} and {key!r} "
                                f"would both be saved as {name}")
            self._pngs[name] = key
            try:
                save_label_png(self._folder, key, labels)
            except UserError as e:  # named as the file is called once the folder is renamed
                raise UserError(str(e).replace(str(self._folder), str(self.save_masks), 1)) from None

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._masks.__exit__(exc_type, exc, tb)  # removes the PNG folder
            return self.csv.__exit__(exc_type, exc, tb)  # and the temporary CSV
        try:
            self._masks.close()  # the PNG folder first: a written CSV means everything is there
        except BaseException as e:
            self.csv.__exit__(type(e), e, e.__traceback__)
            if isinstance(e, OSError):
                raise write_error(self.save_masks, e) from None
            raise
        return self.csv.__exit__(None, None, None)
