"""Reading submission CSVs strictly, shared by every submission format: one-line errors naming the file, and a
capped list of problems so that a wholly wrong file yields a readable report."""
from __future__ import annotations

import contextlib
import csv

from utils.errors import DataError


class Problems(list):
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
