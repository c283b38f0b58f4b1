"""k-fold cross-validation: one run per fold in <run dir>/fold<k>/, then a table of per-fold and mean ± std
validation Dice, per class too, printed and saved as <run dir>/folds.json."""
from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Callable, Iterable
from pathlib import Path

from trainer.callbacks import Callback
from trainer.runtime import Runtime
from trainer.trainer import Trainer, format_class_table
from utils.config import Config
from utils.errors import UserError
from utils.files import write_text_atomic


def parse_folds(spec: str, n_splits: int, split: str = "kfold") -> list[int]:
    """`all` or a comma-separated list such as `0,2,4`; `split` is data.split (files: no folds to train)."""
    if split != "kfold":
        raise UserError(f"--folds: data.split is {split!r} (fixed training and validation files): there are no "
                        "folds; set data.split=kfold to cross-validate")
    if spec == "all":
        return list(range(n_splits))
    try:
        folds = [int(part) for part in spec.split(",")]
    except ValueError:
        raise UserError(f"--folds: expected 'all' or a list such as 0,1,2, got {spec!r}") from None
    bad = [k for k in folds if not 0 <= k < n_splits]
    if bad:
        raise UserError(f"--folds: fold {bad[0]} is out of range for data.n_splits={n_splits} (0..{n_splits - 1})")
    return sorted(set(folds))


def train_folds(cfg: Config, run_dir: Path, folds: list[int], runtime: Runtime, progress: bool = True,
                callbacks_for: Callable[[Config, Path], Iterable[Callback]] | None = None) -> dict:
    """`callbacks_for(fold config, fold folder)` gives each fold's observers (the entry script's tracking)."""
    results = {}
    for k in folds:
        fold_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, fold=k))
        if runtime.is_main:
            print(f"=== fold {k} ({folds.index(k) + 1} of {len(folds)})")
        fold_dir = run_dir / f"fold{k}"
        callbacks = callbacks_for(fold_cfg, fold_dir) if callbacks_for is not None else ()
        outcome = Trainer(fold_cfg, fold_dir, runtime, progress=progress, callbacks=callbacks).fit()
        record = outcome["best_record"] or {}
        m = outcome["metric"]  # dice (multilabel) or miou (multiclass)
        results[k] = {f"val_{m}": outcome["best_score"], "per_class": record.get(f"val_{m}_per_class", {}),
                      "epoch": record.get("epoch")}
        title = outcome["metric_title"]
    summary = summarize(results, cfg.task.classes, m)
    if runtime.is_main:
        print(format_summary(summary, cfg.task.classes, m, title))
        write_text_atomic(run_dir / "folds.json", json.dumps(summary, indent=2))
    return summary


def summarize(results: dict, classes: list[str], metric: str = "dice") -> dict:
    def mean_std(values):
        values = [v for v in values if v is not None]
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)} if values else None

    return {"folds": {str(k): r for k, r in results.items()},
            f"val_{metric}": mean_std(r[f"val_{metric}"] for r in results.values()),
            "per_class": {c: mean_std(r["per_class"].get(c) for r in results.values()) for c in classes}}


def format_summary(summary: dict, classes: list[str], metric: str = "dice", title: str = "Dice") -> str:
    lines = [f"fold  val {title:<4s}  best epoch"]
    lines += [f"{k:>4}  {r[f'val_{metric}']:.4f}    {r['epoch']}" for k, r in summary["folds"].items()]
    d = summary[f"val_{metric}"]
    lines.append(f"mean  {d['mean']:.4f} ± {d['std']:.4f}")
    per_class = [summary["per_class"][c]["mean"] if summary["per_class"][c] else float("nan") for c in classes]
    lines.append("per class (mean over folds):")
    lines.append(format_class_table(classes, per_class))
    return "\n".join(lines)
