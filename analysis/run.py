"""A finished run as analyze.py reads it: metrics.jsonl, its config and a checkpoint, each checked with a one-line
error naming the file."""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from modes import build_mode
from utils.config import Config, from_dict, read_yaml
from utils.errors import UserError


@dataclass
class Run:
    folder: Path
    cfg: Config
    records: list[dict]  # metrics.jsonl, one per epoch (and one for SWA when used)

    @property
    def epochs(self) -> list[dict]:
        return [r for r in self.records if not r.get("swa")]

    @property
    def mode(self):
        """The task mode (modes): its metric names the records' score keys, as the trainer wrote them."""
        return build_mode(self.cfg.task.mode)

    @property
    def score_key(self) -> str:
        return f"val_{self.mode.metric}"  # val_dice (multilabel) or val_miou (multiclass)

    @property
    def best(self) -> dict | None:
        """The record with the best validation score of the task's metric (the one best.pt holds)."""
        key = self.score_key
        scored = [r for r in self.records if r.get(key) is not None]
        return max(scored, key=lambda r: r[key]) if scored else None


def read_metrics(folder: Path) -> list[dict]:
    """The records of metrics.jsonl, each value checked (a hand-edited file reaches HTML pages and figures): a value of
    the wrong type is skipped with a warning naming the line and key, and the skips are counted at the end."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no metrics file (not a run directory, or no epoch has finished)")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({' '.join(str(e).split())[:120]})") from None
    records, skipped = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UserError(f"{path}:{n}: not a JSON line (a truncated or foreign file)") from None
        record = _checked_record(record, f"{path}:{n}", skipped)
        if record is not None:
            records.append(record)
    for message in skipped:
        print(f"warning: {message}", file=sys.stderr)
    if skipped:
        print(f"warning: {path}: {len(skipped)} value(s) of the wrong type skipped", file=sys.stderr)
    if not records:
        raise UserError(f"{path}: empty (no epoch has finished)")
    return records


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _checked_record(record, where: str, skipped: list[str]) -> dict | None:
    """What the trainer writes: `epoch` a positive integer (else the record is skipped), `swa` true/false,
    `*_per_class` a mapping {class: number or null}, every other value a finite number or null."""
    if not isinstance(record, dict) or isinstance(record.get("epoch"), bool) or not isinstance(
            record.get("epoch"), int) or record["epoch"] < 1:
        skipped.append(f"{where}: a record without a positive integer 'epoch', skipped")
        return None
    out = {}
    for key, value in record.items():
        if key == "epoch" or (key == "swa" and isinstance(value, bool)) or value is None or _number(value):
            out[key] = value
        elif key.endswith("_per_class") and isinstance(value, dict):
            bad = [c for c, v in value.items() if v is not None and not _number(v)]
            skipped += [f"{where}: {key}[{c!r}] is {_shown(value[c])}, not a number; skipped" for c in bad]
            out[key] = {c: v for c, v in value.items() if c not in bad}
        else:
            wanted = "a mapping" if key.endswith("_per_class") else "true/false" if key == "swa" else "a number"
            skipped.append(f"{where}: {key!r} is {_shown(value)}, not {wanted}; skipped")
    return out


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"


def read_config(folder: Path, overrides=()) -> Config:
    path = folder / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path}: the run's config is missing")
    return from_dict(read_yaml(path), source=str(path), overrides=overrides)  # read_yaml: the loaders' checks


def open_run(folder: str | Path, data_root: str | None = None) -> Run:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: run directory not found")
    overrides = [f"data.root={data_root}"] if data_root else []
    return Run(folder, read_config(folder, overrides), read_metrics(folder))
