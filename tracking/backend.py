"""What every tracking backend receives, in one place: the flat resolved config at the start, each epoch's metrics
(loss, learning rate, validation and per-class Dice, best so far), the shared validation overlays, and a summary
with the run's artifacts at the end. A backend only says how to send them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tracking.images import ValidationImages
from trainer.callbacks import Callback
from utils.config import Config, to_dict


def flat_params(cfg: Config) -> dict[str, str]:
    """`optimizer.lr: "0.001"`, ...: the saved (secret-free) config, one parameter per leaf."""
    out = {}

    def walk(node, prefix):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        elif prefix != "task.classes":  # the class list is long and fixed by the task
            out[prefix] = str(node)

    walk(to_dict(cfg), "")
    return out


@dataclass(frozen=True)
class RunIdentity:
    """Where a run sits among the others: its name (its folder's path below the runs folder: `demo`,
    `demo_kfold/fold0`, `demo-losses/trial-3`), the runs folder (home of the default MLflow store) and its group
    (a k-fold run or a study; None for a single run)."""
    name: str
    runs_root: Path
    group: str | None = None

    @classmethod
    def of(cls, run_dir: Path, runs_root: Path | None = None, group: str | None = None) -> RunIdentity:
        """Default runs folder: the run folder's parent, or for a fold folder of a k-fold run (`<run>/fold<k>`,
        trainer/kfold.py's layout, e.g. resumed on its own) its run's parent, the run then being its group."""
        run_dir = run_dir.resolve()
        if runs_root is None and re.fullmatch(r"fold\d+", run_dir.name):
            runs_root, group = run_dir.parent.parent, group or run_dir.parent.name
        root = run_dir.parent if runs_root is None else runs_root.resolve()
        try:
            name = run_dir.relative_to(root).as_posix()
        except ValueError:  # a run outside the runs folder: its own folder's name
            name = run_dir.name
        return cls(name or run_dir.name, root, group)

    @property
    def tags(self) -> dict[str, str]:
        return {} if self.group is None else {"group": self.group}


SCORES = ("dice", "miou")  # the record keys of the task modes (trainer/modes.py): val_<m>, best_<m>, per class


def epoch_metrics(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record, per-class scores as `val_dice/<class>` (multiclass: `val_miou/<class>`,
    and pixel accuracy); missing values (an IoU of a class in neither prediction nor truth) left out."""
    keys = ("train_loss", "lr", *(f"{p}_{m}" for m in SCORES for p in ("val", "best")), "val_pixel_accuracy",
            "seconds")
    out = {k: float(record[k]) for k in keys if record.get(k) is not None}
    for m in SCORES:
        out.update({f"val_{m}/{name}": float(v) for name, v in record.get(f"val_{m}_per_class", {}).items()
                    if v is not None})
    return out


class Backend(Callback):
    name = "backend"

    def __init__(self, cfg: Config, run_dir: Path, images: ValidationImages, identity: RunIdentity):
        self.cfg, self.run_dir, self.images, self.identity = cfg, Path(run_dir), images, identity

    # what a backend implements
    def open(self, params: dict[str, str]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_images(self, images: dict[str, np.ndarray], step: int) -> None: ...
    def close(self, summary: dict, failed: bool) -> None: ...

    # the trainer's events, the same for every backend
    def on_start(self, trainer) -> None:
        self.open(flat_params(trainer.cfg))

    def on_epoch_end(self, trainer, record: dict) -> None:
        self.log_metrics(epoch_metrics(record), record["epoch"])
        images = self.images.get(trainer, record)
        if images:
            self.log_images(images, record["epoch"])

    def on_end(self, trainer, result: dict) -> None:
        self.close({f"best_{result['metric']}": result["best_score"], "epochs": result["epochs"]}, failed=False)

    def on_crash(self, trainer, error: BaseException) -> None:
        self.close({f"best_{trainer.mode.metric}": trainer.best_score}, failed=True)
