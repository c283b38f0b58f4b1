"""Writing results so that a crash never leaves a half-written file that looks complete."""
from __future__ import annotations

from pathlib import Path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to `<path>.tmp` beside the target, then rename over it (atomic on one file system)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
