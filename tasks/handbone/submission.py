"""The hand-bone competition's submission CSV: write atomically, read strictly, validate, hard-vote.

Layout: header ``image_name,class,rle``; ``image_name`` is the PNG's basename; per image one
row per class, in class order; images in the sorted order of their ``IDxxx/name.png`` paths
under ``ROOT/test/DCM``; an empty mask is an empty ``rle`` field.

Checked from the command line by ``python inference.py --check SUB.csv --data ROOT``.
"""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

import numpy as np

from tasks.handbone.reader import IMAGE_DIR, scan_split
from utils.csvfile import Problems, csv_rows
from utils.errors import DataError, UserError
from utils.files import check_output_file, remove_stale_temps, write_error
from utils.images import read_png_size
from utils.rle import decode_rle, encode_rle_crop, parse_rle, runs_to_rle

HEADER = ("image_name", "class", "rle")

# --------------------------------------------------------------------------- writing

class SubmissionWriter:
    """Context manager writing a submission one image at a time.

    Rows go to a temporary file next to `path` that replaces `path` (os.replace, atomic on
    one file system) only when the block exits normally; on an exception the temporary file
    is deleted. So a crash mid-inference never leaves a truncated CSV that looks finished.
    """

    def __init__(self, path, classes):
        self.path = os.fspath(path)
        self.classes = list(classes)
        if not self.classes:
            raise ValueError("SubmissionWriter needs at least one class")
        self._tmp = f"{self.path}.{os.getpid()}.tmp"   # pid: two writers never share a temp
        self._file = None
        self._writer = None
        self._images = set()

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

    def write_image(self, image_name, rles):
        """Write the rows of one image: `rles` holds one RLE string per class, in class order."""
        if self._writer is None:
            raise RuntimeError("SubmissionWriter.write_image called outside its `with` block")
        if isinstance(rles, str) or len(rles) != len(self.classes):
            n = "a string" if isinstance(rles, str) else len(rles)
            raise ValueError(f"{image_name}: got {n} RLE strings for {len(self.classes)} classes")
        if image_name in self._images:
            raise ValueError(f"{image_name}: image written twice")
        self._images.add(image_name)
        try:
            self._writer.writerows([image_name, cls, rle] for cls, rle in zip(self.classes, rles))
        except OSError as e:  # a full disk: one line naming the CSV, and __exit__ removes the temporary file
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
            if os.path.exists(self._tmp):       # an exception, or close/replace failed
                with contextlib.suppress(OSError):
                    os.unlink(self._tmp)
        return False


# --------------------------------------------------------------------------- reading

def _scan(path, classes, problems):
    """Parse a submission into {image_name: {class: rle}} (in file order) and its row count.

    Structural problems (header, field count, unknown/duplicate/missing/out-of-order class
    rows, an image split into two blocks) are added to `problems`; a file that is not UTF-8
    text or not CSV at all raises DataError, since nothing after that can be trusted.
    """
    class_index = {c: i for i, c in enumerate(classes)}
    images = {}
    n_rows = 0
    with csv_rows(path) as reader:
        header = next(reader, None)
        if header is None:
            problems.add(f"{path}: empty file (expected header {','.join(HEADER)})")
            return images, 0
        if [h.strip() for h in header] != list(HEADER):
            problems.add(f"{path}: line 1: header is {','.join(header)[:80]!r}, "
                         f"expected {','.join(HEADER)!r}")
            return images, 0
        current, block, block_line = None, None, 0
        for row in reader:
            line = reader.line_num
            n_rows += 1
            if problems.full:
                continue                      # keep counting rows only
            if len(row) != 3:
                problems.add(f"{path}: line {line}: {len(row)} fields, expected 3 "
                             f"({','.join(HEADER)})")
                continue
            name, cls, rle = row
            if cls not in class_index:
                problems.add(f"{path}: line {line}: unknown class {cls[:40]!r} "
                             f"(image {name!r})")
                continue
            if name != current:
                if block is not None:
                    _check_block(path, current, block, block_line, classes, problems)
                if name in images:
                    problems.add(f"{path}: line {line}: image {name!r} appears again after "
                                 f"its rows ended (duplicate rows)")
                current, block, block_line = name, images.setdefault(name, {}), line
            if cls in block:
                problems.add(f"{path}: line {line}: duplicate row for image {name!r}, "
                             f"class {cls!r}")
                continue
            block[cls] = rle
        if block is not None:
            _check_block(path, current, block, block_line, classes, problems)
    return images, n_rows


def _check_block(path, name, block, line, classes, problems):
    """Problems with one image's block of rows: missing classes, or classes out of order."""
    missing = [c for c in classes if c not in block]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.add(f"{path}: line {line}: image {name!r} is missing rows for class(es) {shown}")
        return
    for i, cls in enumerate(block):
        if cls != classes[i]:
            problems.add(f"{path}: line {line + i}: image {name!r}: class rows out of order "
                         f"({cls!r} where {classes[i]!r} is expected)")
            return


def read_submission(path, classes):
    """{image_name: [rle per class, in `classes` order]} in file order; DataError (one line,
    naming the file and line) for the first structural problem. RLE texts are not decoded.
    """
    classes = list(classes)
    problems = Problems(limit=1)
    images, _ = _scan(path, classes, problems)
    if problems:
        raise DataError(problems[0])
    return {name: [block[c] for c in classes] for name, block in images.items()}


# --------------------------------------------------------------------------- test images

def test_samples(test_root) -> list:
    """The test images under ROOT/test/DCM in submission order (sorted 'IDxxx/name.png' paths): the one list that
    inference predicts and that --check and hard voting expect; files scan_split skips are named in a warning
    there. Two images of one file name are refused: their rows could not be told apart."""
    dcm = Path(test_root) / "test" / IMAGE_DIR
    samples = scan_split(test_root, "test")
    seen = {}
    for sample in samples:
        name = sample.key.rsplit("/", 1)[-1]
        if name in seen:
            raise DataError(f"{dcm}: two test images share the file name {name!r} "
                            f"({seen[name]} and {sample.key}); submission rows could not tell them apart")
        seen[name] = sample.key
    return samples


def list_test_images(test_root) -> list[str]:
    """The sorted 'IDxxx/name.png' keys of test_samples."""
    return [sample.key for sample in test_samples(test_root)]


def read_test_image_sizes(test_root):
    """{image_name: (height, width)} for the test images, in submission order."""
    dcm = Path(test_root) / "test" / "DCM"
    return {r.rsplit("/", 1)[-1]: read_png_size(dcm / r) for r in list_test_images(test_root)}


# --------------------------------------------------------------------------- validation

def validate_submission(csv_path, test_root, classes, max_problems=50):
    """Problems that would make the competition reject or misread `csv_path`; [] if none.

    Checks the layout (header, fields, classes and their order per image), the row count
    (images x classes), that the image names are exactly the test images in sorted
    IDxxx/name.png order, and that every RLE is well-formed and inside its image (size from
    the PNG header). Raises DataError if the CSV is unreadable as CSV or the test folder
    is missing. At most `max_problems` lines are returned (plus a count of the rest).
    """
    classes = list(classes)
    rel = list_test_images(test_root)
    dcm = Path(test_root) / "test" / "DCM"
    expected = [r.rsplit("/", 1)[-1] for r in rel]
    where = dict(zip(expected, rel))
    problems = Problems(max_problems)
    images, n_rows = _scan(csv_path, classes, problems)
    if problems and not images:           # bad header or empty: nothing else is meaningful
        return list(problems)

    want_rows = len(expected) * len(classes)
    if n_rows != want_rows:
        problems.add(f"{csv_path}: {n_rows} rows, expected {want_rows} "
                     f"({len(expected)} images x {len(classes)} classes)")
    names = list(images)
    expected_set, names_set = set(expected), set(names)
    unknown = [n for n in names if n not in expected_set]
    missing = [n for n in expected if n not in names_set]
    if unknown:
        problems.add(f"{csv_path}: {len(unknown)} image(s) not in {dcm}: "
                     + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    if missing:
        problems.add(f"{csv_path}: {len(missing)} test image(s) have no rows: "
                     + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    in_order = [n for n in names if n in expected_set]
    wanted_order = [n for n in expected if n in names_set]
    if in_order != wanted_order:
        i = next(i for i, (a, b) in enumerate(zip(in_order, wanted_order)) if a != b)
        problems.add(f"{csv_path}: images are not in sorted test/DCM path order: image #{i + 1} "
                     f"is {in_order[i]!r}, expected {wanted_order[i]!r}")

    for name, block in images.items():
        if name not in where or problems.full:
            continue
        height, width = read_png_size(dcm / where[name])
        for cls, rle in block.items():
            try:
                parse_rle(rle, height, width)
            except ValueError as e:
                problems.add(f"{csv_path}: image {name!r}, class {cls!r}: {e}")
    if problems.dropped:
        problems.append(f"... and {problems.dropped} more problem(s)")
    return list(problems)


# --------------------------------------------------------------------------- hard voting

def _vote(runs, min_votes):
    """Runs (0-indexed starts, lengths) covered by >= min_votes of the given run lists.

    Works on run boundaries (+1 at each start, -1 at each end, running sum) instead of
    decoding 4M-pixel masks, and emits only maximal runs, so the text equals encode_rle
    of the voted mask.
    """
    starts = np.concatenate([s for s, _ in runs])
    ends = np.concatenate([s + n for s, n in runs])
    if starts.size == 0:
        return starts, starts
    points, where = np.unique(np.concatenate([starts, ends]), return_inverse=True)
    where = where.reshape(-1)
    delta = (np.bincount(where[: starts.size], minlength=points.size)        # runs opening
             - np.bincount(where[starts.size :], minlength=points.size))     # runs closing
    chosen = np.cumsum(delta) >= min_votes         # votes on [points[i], points[i+1])
    before = np.concatenate([[False], chosen[:-1]])
    run_starts = points[chosen & ~before]
    run_ends = points[~chosen & before]            # chosen[-1] is False: every run ends
    return run_starts, run_ends - run_starts


def hard_vote(csv_paths, min_votes, out_path, classes, sizes):
    """Pixel-wise majority of several submissions: keep a pixel where >= min_votes agree.

    `sizes` maps image_name -> (height, width) (see read_test_image_sizes). The inputs must list
    the same images in the same order and the same classes; otherwise DataError names the
    input CSV that differs. The result is written atomically with SubmissionWriter.
    """
    csv_paths = [os.fspath(p) for p in csv_paths]
    classes = list(classes)
    if not csv_paths:
        raise UserError("hard voting needs at least one submission CSV")
    if not 1 <= min_votes <= len(csv_paths):
        raise UserError(f"min_votes must be between 1 and {len(csv_paths)} (the number of "
                        f"submissions), got {min_votes}")
    subs = [read_submission(p, classes) for p in csv_paths]
    first = list(subs[0])
    for path, sub in zip(csv_paths[1:], subs[1:]):
        names = list(sub)
        if names != first:
            i = next((i for i, (a, b) in enumerate(zip(names, first)) if a != b),
                     min(len(names), len(first)))
            got = repr(names[i]) if i < len(names) else "the end of the file"
            want = repr(first[i]) if i < len(first) else "the end of the file"
            raise DataError(f"{path}: image #{i + 1} is {got} but {csv_paths[0]} has {want}; "
                            f"submissions must list the same images in the same order")
    with SubmissionWriter(out_path, classes) as writer:
        for name in first:
            if name not in sizes:
                raise UserError(f"no image size given for {name!r} (sizes must cover every image)")
            height, width = sizes[name]
            rles = []
            for c, cls in enumerate(classes):
                runs = []
                for path, sub in zip(csv_paths, subs):
                    try:
                        runs.append(parse_rle(sub[name][c], height, width))
                    except ValueError as e:
                        raise DataError(f"{path}: image {name!r}, class {cls!r}: {e}") from None
                rles.append(runs_to_rle(*_vote(runs, min_votes)))
            writer.write_image(name, rles)


# --------------------------------------------------------------------------- the task's submission


class HandboneSubmission:
    """`task.submission: handbone`: thresholded sigmoid masks as RLE rows, asked by inference.py, ensemble.py and
    the tests through the task (tasks/__init__.py)."""
    name = "handbone"
    header = HEADER  # how --check tells the format of a CSV
    layouts = ("handbone",)  # whose test set it lists

    def __init__(self, layout):
        self.classes = list(layout.classes)

    def test_samples(self, root) -> list:
        return test_samples(root)

    def check_out(self, out) -> Path:
        """The output, before any model is loaded: a CSV file in an existing folder."""
        return check_output_file(out)

    def writer(self, out, thresholds, crf=None, save_masks=None, read_image=None, postprocess=None) -> _RleWriter:
        """`postprocess`: a modes.postprocess.Postprocess applied to each class's mask (None: masks as predicted)."""
        if save_masks is not None:
            raise UserError("--save-masks writes label maps of the trash submission; the hand-bone CSV holds RLE "
                            "masks (use --save-probs for the probabilities)")
        if crf is not None:
            raise UserError("predict.crf: DenseCRF refines softmax outputs, not the hand-bone sigmoid masks")
        return _RleWriter(out, self.classes, thresholds, postprocess)

    def validate(self, path, root) -> list[str]:
        return validate_submission(path, root, self.classes)

    def decode(self, path, root):
        """Yield (test sample, (C, H, W) bool masks at its size) for the images of a submission, in file order."""
        rles = read_submission(path, self.classes)
        samples = {Path(s.key).name: s for s in test_samples(root)}
        for name, image_rles in rles.items():
            if name not in samples:
                raise DataError(f"{path}: image {name!r} is not a test image of {root}")
            size = read_png_size(samples[name].image)
            try:
                yield samples[name], np.stack([decode_rle(rle, *size) for rle in image_rles]).astype(bool)
            except ValueError as e:
                raise DataError(f"{path}: image {name!r}: {e}") from None

    def hard_vote(self, paths: list, min_votes: int | None, out, root) -> str:
        """A pixel is kept where at least `min_votes` submissions agree; returns the line to print."""
        if min_votes is None:
            raise UserError("--csvs needs --min-votes N")
        if not 1 <= min_votes <= len(paths):
            raise UserError(f"--min-votes: {min_votes} is not between 1 and the {len(paths)} submissions")
        if not root:
            raise UserError("--csvs needs --data ROOT (the test images give each mask's size)")
        hard_vote(paths, min_votes, out, self.classes, read_test_image_sizes(root))
        return f"wrote {out}: pixels kept where at least {min_votes} of {len(paths)} submissions agree"


class _RleWriter:
    """Per image: masks thresholded inside their boxes (modes.fullsize) on the prediction's device (`prepare`),
    then post-processed on the crops (see modes.postprocess.Postprocess.mask), run-length encoded from the crops
    with their offsets and written (`write`, in a background thread)."""

    def __init__(self, out, classes: list[str], thresholds, postprocess=None):
        self.csv = SubmissionWriter(out, classes)
        self.thresholds = thresholds
        self.postprocess = postprocess

    def __enter__(self):
        self.csv.__enter__()
        return self

    def prepare(self, sample, probs):
        masks = [None if m is None else (m[0], m[1].cpu().numpy())
                 for m in probs.masks(self.thresholds.to(probs.device))]
        return Path(sample.key).name, probs.size[1], masks

    def write(self, payload) -> None:
        name, width, masks = payload
        if self.postprocess is not None:
            masks = [None if m is None else (m[0], self.postprocess.mask(c, m[1])) for c, m in enumerate(masks)]
        self.csv.write_image(name, ["" if m is None else encode_rle_crop(m[1], m[0][0], m[0][2], width)
                                    for m in masks])

    def __exit__(self, exc_type, exc, tb):
        return self.csv.__exit__(exc_type, exc, tb)
