"""Out-of-fold predictions of k-fold runs, cached on disk per run, pooled over the folds with their truth.

Each fold model predicts the validation images it never trained on through the inference path
(trainer.inference.iter_full_size_probs: the same decoding, resizing, CPU transforms, predictor and TTA as a test
submission), and its model-resolution probabilities are saved as `inference.py --save-probs` saves them (uint8,
compressed, one .npz per image: RUN/oof/fold<k>/<key>.npz beside a probs.json), so a candidate ensemble is scored
by upsampling them exactly like live predictions (modes.fullsize). RUN/oof/index.json records, per fold, the
checkpoint's size and modification time, the --set overrides and the validation keys it was computed for: a changed
checkpoint (its config lives inside it), other overrides or another split is predicted again, anything else is read
back without loading a model. Scoring reads one image at a time: memory stays flat in the number of images.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from data.cache import SampleCache, open_cache
from tasks.registry import Task, build_task
from trainer.checkpoint import load_checkpoint
from trainer.inference import (
    ProbsMember,
    expand_checkpoints,
    iter_full_size_probs,
    load_members,
    load_probs_member,
    member_config,
)
from utils.config import Config, from_dict, to_dict
from utils.errors import DataError, UserError
from utils.files import make_folder, write_error, write_text_atomic

INDEX_VERSION = 1


def fingerprint(path: Path) -> dict:
    """What tells a changed checkpoint: its size and modification time (its config is stored inside it)."""
    try:
        st = path.stat()
    except OSError:
        raise UserError(f"{path}: checkpoint not found") from None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass
class FoldPrediction:
    """One fold model of a run and its out-of-fold predictions."""
    fold: int
    checkpoint: Path
    cfg: Config
    fingerprint: dict
    samples: list  # the fold's validation samples, in split order
    folder: Path  # RUN/oof/fold<k>
    cached: bool = False

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.samples]


@dataclass
class RunPredictions:
    """A run folder's fold models by fold number."""
    folder: Path
    folds: dict[int, FoldPrediction] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.folder)

    @property
    def cfg(self) -> Config:
        return next(iter(self.folds.values())).cfg


class _Splits:
    """Validation samples per (data settings, fold), read once per select: the layouts scan folders or JSON."""

    def __init__(self):
        self.known: dict = {}

    def val_samples(self, cfg: Config, task: Task) -> list:
        d = cfg.data
        key = (cfg.task.format, d.root, d.split, d.n_splits, d.fold, cfg.trainer.seed, tuple(cfg.task.classes))
        if key not in self.known:
            samples, _, val_idx, _ = task.layout.fold(d, cfg.trainer.seed)
            self.known[key] = [samples[i] for i in val_idx]
        return self.known[key]


def collect_runs(folders: list, overrides: list[str]) -> list[RunPredictions]:
    """Every run's fold models with their configs and validation samples, from the cache index where it is
    current (no checkpoint is read then), without predicting anything yet."""
    splits = _Splits()
    runs = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise UserError(f"{folder}: --select takes run folders (a k-fold run's folder with fold*/best.pt)")
        if any(Path(r.folder).resolve() == folder.resolve() for r in runs):
            raise UserError(f"{folder}: given twice (the selection repeats members by itself)")
        index = _read_index(folder)
        run = RunPredictions(folder)
        for checkpoint in expand_checkpoints([folder]):
            stamp = fingerprint(checkpoint)
            entry = index.get(str(checkpoint.relative_to(folder)))
            current = entry is not None and entry.get("checkpoint") == stamp and entry.get("overrides") == overrides
            cfg = (from_dict(entry["config"], str(checkpoint)) if current else
                   member_config(checkpoint, None, overrides, None, load_checkpoint(checkpoint)))
            fold = cfg.data.fold
            if fold in run.folds:
                raise UserError(f"{folder}: {run.folds[fold].checkpoint} and {checkpoint} are both fold {fold}")
            samples = splits.val_samples(cfg, build_task(cfg))
            if not samples:
                raise DataError(f"{checkpoint}: fold {fold} has no validation images")
            prediction = FoldPrediction(fold, checkpoint, cfg, stamp, samples, folder / "oof" / f"fold{fold}")
            prediction.cached = current and entry.get("keys") == prediction.keys and _complete(prediction)
            run.folds[fold] = prediction
        runs.append(run)
    check_same_split(runs)
    return runs


def check_same_split(runs: list[RunPredictions]) -> None:
    """Runs are compared on the same images: the same classes and mode, the same folds holding the same
    validation images. A mismatch is one line naming both runs."""
    first = runs[0]
    for run in runs[1:]:
        pair = f"{first.name} and {run.name}"
        if run.cfg.task.classes != first.cfg.task.classes or run.cfg.task.mode != first.cfg.task.mode:
            raise UserError(f"{pair}: predict other classes or another task.mode; --select compares runs of one task")
        if sorted(run.folds) != sorted(first.folds):
            raise UserError(f"{pair}: not the same cross-validation split (folds {sorted(first.folds)} against "
                            f"{sorted(run.folds)}); --select compares runs of the same folds")
        for k, fold in first.folds.items():
            other = run.folds[k]
            if other.keys != fold.keys:
                differ = len(set(other.keys) ^ set(fold.keys))
                how = f"{differ} images differ" if differ else "the same images in another order"
                raise UserError(f"{pair}: not the same cross-validation split (fold {k}: {how}); --select compares "
                                "k-fold runs of the same data.root, data.n_splits and trainer.seed")


def predict_missing(runs: list[RunPredictions], overrides: list[str], num_workers: int = 2,
                    progress: bool = True) -> tuple[int, int]:
    """Predict the folds whose cache is missing or stale; returns (images predicted, images read from cache)."""
    predicted = reused = 0
    for run in runs:
        for fold in run.folds.values():
            if fold.cached:
                reused += len(fold.samples)
                continue
            _remove(fold.folder)
            [member], runtime = load_members([fold.checkpoint], [1.0], overrides)
            make_folder(fold.folder)
            for _ in iter_full_size_probs([member], fold.samples, runtime, member.task.layout.read_image, num_workers,
                                          progress, save_probs=fold.folder, desc=f"out-of-fold {run.name} fold "
                                          f"{fold.fold}"):
                predicted += 1
            write_text_atomic(fold.folder / "probs.json", json.dumps({"classes": fold.cfg.task.classes}))
            _record(run, fold, overrides)
            fold.cached = True
    return predicted, reused


def _remove(folder: Path) -> None:
    if folder.exists():
        try:
            shutil.rmtree(folder)
        except OSError as e:
            raise write_error(folder, e) from None


def _read_index(folder: Path) -> dict:
    """{checkpoint path relative to the run: entry}; an unreadable or foreign index is only a stale cache."""
    path = folder / "oof" / "index.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != INDEX_VERSION or not isinstance(data.get("folds"), dict):
        return {}
    return {k: v for k, v in data["folds"].items() if isinstance(v, dict)}


def _record(run: RunPredictions, fold: FoldPrediction, overrides: list[str]) -> None:
    index = _read_index(run.folder)
    index[str(fold.checkpoint.relative_to(run.folder))] = {
        "fold": fold.fold, "checkpoint": fold.fingerprint, "overrides": list(overrides),
        "config": to_dict(fold.cfg), "keys": fold.keys}
    write_text_atomic(run.folder / "oof" / "index.json",
                      json.dumps({"version": INDEX_VERSION, "folds": index}, indent=1))


def _complete(fold: FoldPrediction) -> bool:
    return (fold.folder / "probs.json").is_file() and all(
        (fold.folder / Path(key).with_suffix(".npz")).is_file() for key in fold.keys)


class OofImages:
    """The pooled out-of-fold images (folds in order, each in split order): per image its size, truth and every
    run's saved probabilities. The truth is the validation cache at the original size (data/cache.py), as the
    trainer scores validation."""

    def __init__(self, runs: list[RunPredictions], progress: bool = True):
        self.runs = runs
        reference = runs[0]
        self.task = build_task(reference.cfg)
        self.classes = list(reference.cfg.task.classes)
        self.items: list[tuple[int, int]] = []  # (fold, index in the fold's validation samples)
        self.truth: dict[int, SampleCache] = {}
        self.members: list[dict[int, ProbsMember]] = [
            {k: load_probs_member(f.folder) for k, f in run.folds.items()} for run in runs]
        for k in sorted(reference.folds):
            fold = reference.folds[k]
            d = fold.cfg.data
            self.truth[k] = open_cache(fold.samples, self.task.layout, None, d.cache_dir, d.cache_workers, progress)
            self.items += [(k, i) for i in range(len(fold.samples))]

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, n: int):
        k, i = self.items[n]
        return self.runs[0].folds[k].samples[i]

    def size(self, n: int) -> tuple[int, int]:
        k, i = self.items[n]
        return self.truth[k].original_size(i)

    def truth_bits(self, n: int) -> np.ndarray:
        """(C, H, W/8) packed masks (multilabel)."""
        k, i = self.items[n]
        return self.truth[k].mask_bits(i)

    def truth_labels(self, n: int) -> np.ndarray:
        """(H, W) label map (multiclass)."""
        k, i = self.items[n]
        return self.truth[k].labels(i)

    def maps(self, n: int, runs: list[int], device) -> dict[int, torch.Tensor]:
        """{run: (C, h, w) model-resolution probabilities} of image n, for the runs asked."""
        k, i = self.items[n]
        key = self.runs[0].folds[k].samples[i].key
        return {r: self.members[r][k].load(key).to(device) for r in runs}
