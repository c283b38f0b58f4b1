"""What every tracking backend receives, in one place: the flat resolved config at the start, each epoch's metrics
(loss, learning rate, validation and per-class Dice, best so far), the shared validation overlays, and a summary
with the run's artifacts at the end. A backend only says how to send them."""
from __future__ import annotations

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


def run_name(cfg: Config, run_dir: Path) -> str:
    """The config's name, with the run folder when it differs (k-fold: `demo/fold2`)."""
    return cfg.name if run_dir.name == cfg.name else f"{cfg.name}/{run_dir.name}"


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

    def __init__(self, cfg: Config, run_dir: Path, images: ValidationImages):
        self.cfg, self.run_dir, self.images = cfg, Path(run_dir), images

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
