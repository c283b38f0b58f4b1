"""Per-epoch metrics appended to `metrics.jsonl` in the run directory (always written, the file that analyze.py and
run comparisons read), and labelled console lines for processes that share one terminal (sweep workers).
Tracking backends (TensorBoard, MLflow, wandb) are callbacks in tracking/."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class LabelledLines(io.TextIOBase):
    """A text stream that starts every line with `[label] ` and passes whole lines on, flushed, so that the lines
    of several processes writing to one terminal or log file stay whole and say whose they are."""

    def __init__(self, stream, label: str):
        self.stream, self.prefix, self.at_line_start = stream, f"[{label}] ", True

    def write(self, text: str) -> int:
        pieces, out = text.split("\n"), []
        for i, piece in enumerate(pieces):
            start = self.prefix if self.at_line_start else ""
            if i < len(pieces) - 1:  # a line ends here
                out.append(f"{start}{piece}\n")
                self.at_line_start = True
            elif piece:  # an open line: the rest comes with a later write
                out.append(start + piece)
                self.at_line_start = False
        self.stream.write("".join(out))
        if len(pieces) > 1:
            self.stream.flush()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    @property
    def encoding(self):
        return self.stream.encoding


@contextlib.contextmanager
def labelled_output(label: str):
    """Inside the block every line printed to stdout or stderr starts with `[label] `."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = LabelledLines(saved[0], label), LabelledLines(saved[1], label)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved
