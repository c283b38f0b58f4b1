"""Competition submission CSVs: write atomically, read strictly, validate, hard-vote.

Layout: header ``image_name,class,rle``; ``image_name`` is the PNG's basename; per image one
row per class, in class order; images in the sorted order of their ``IDxxx/name.png`` paths
under ``ROOT/test/DCM``; an empty mask is an empty ``rle`` field.

Checked from the command line by ``python inference.py --check SUB.csv --data ROOT``.
"""
from __future__ import annotations

import contextlib
import csv
import os
import struct
from pathlib import Path

import numpy as np

from utils.errors import DataError, UserError
from utils.files import remove_stale_temps, write_error
from utils.rle import parse_rle, runs_to_rle

__all__ = [
    "HEADER",
    "SubmissionWriter",
    "hard_vote",
    "list_test_images",
    "read_png_size",
    "read_submission",
    "read_test_image_sizes",
    "validate_submission",
]

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

class _Problems(list):
    """Problem lines, capped so a wholly wrong CSV yields a readable report."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit
        self.dropped = 0

    def add(self, line):
        if len(self) < self.limit:
            self.append(line)
        else:
            self.dropped += 1

    @property
    def full(self):
        return len(self) >= self.limit


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


@contextlib.contextmanager
def csv_rows(path):
    """A strict csv.reader over a submission file (UTF-8, BOM allowed), shared by both submission formats. csv's
    128 KiB field limit is lifted meanwhile (a noisy mask's RLE, a 256x256 PredictionString are longer). A missing
    file, a folder, text that is not UTF-8 or not CSV become one-line DataErrors naming the file."""
    old = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    reader = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, strict=True)
            yield reader
    except FileNotFoundError:
        raise DataError(f"{path}: submission file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a submission CSV") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text CSV file") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a valid CSV file (line {reader.line_num}: {e})") from None
    finally:
        csv.field_size_limit(old)


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
    problems = _Problems(limit=1)
    images, _ = _scan(path, classes, problems)
    if problems:
        raise DataError(problems[0])
    return {name: [block[c] for c in classes] for name, block in images.items()}


# --------------------------------------------------------------------------- test images

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png_size(path):
    """(height, width) of a PNG from its IHDR chunk: 24 bytes read instead of decoding a
    2048x2048 image (~30 ms each with cv2), so checking 300 test images takes milliseconds.
    The PNG spec requires IHDR first: signature (8 bytes), chunk length (4), 'IHDR' (4),
    then width and height as big-endian uint32 at bytes 16-24.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataError(f"{path}: not a PNG file (no PNG signature and IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    return height, width


def list_test_images(test_root):
    """Sorted 'IDxxx/name.png' paths of the test images under ROOT/test/DCM (submission order): the one list that
    inference predicts (data.handbone.scan_split) and that --check and hard voting expect; files it skips are
    named in a warning there."""
    from data.handbone import scan_split  # here, not at the top: reading CSVs needs no image library

    dcm = Path(test_root) / "test" / "DCM"
    rel = [sample.key for sample in scan_split(test_root, "test")]
    seen = {}
    for r in rel:
        name = r.rsplit("/", 1)[-1]
        if name in seen:
            raise DataError(f"{dcm}: two test images share the file name {name!r} "
                            f"({seen[name]} and {r}); submission rows could not tell them apart")
        seen[name] = r
    return rel


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
    problems = _Problems(max_problems)
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


# --------------------------------------------------------------------------- CLI
