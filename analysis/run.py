"""A finished run as analyze.py reads it: metrics.jsonl, its config and a checkpoint, each checked with a one-line
error naming the file."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from modes import build_mode
from utils.config import Config, from_dict
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
    path = folder / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{path}: no metrics file (not a run directory, or no epoch has finished)")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError(f"{path}:{n}: not a JSON line (a truncated or foreign file)") from None
    if not records:
        raise UserError(f"{path}: empty (no epoch has finished)")
    return records


def read_config(folder: Path, overrides=()) -> Config:
    path = folder / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path}: the run's config is missing")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise UserError(f"{path}: not valid YAML") from None
    return from_dict(raw if isinstance(raw, dict) else {}, source=str(path), overrides=overrides)


def open_run(folder: str | Path, data_root: str | None = None) -> Run:
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: run directory not found")
    overrides = [f"data.root={data_root}"] if data_root else []
    return Run(folder, read_config(folder, overrides), read_metrics(folder))
