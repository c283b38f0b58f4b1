"""From the config to cached, split data: generate the built-in dataset if asked, scan, split by person, cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.cache import SampleCache, open_cache
from data.handbone import read_meta, scan_split
from data.splits import group_kfold
from utils.config import Config, DataConfig


@dataclass
class FoldData:
    cache: SampleCache  # every training image at data.image_size
    truth: SampleCache  # validation masks at the original size (the score is computed there)
    truth_index: dict  # cache index -> truth index
    train_indices: np.ndarray
    val_indices: np.ndarray
    meta: dict


def ensure_dataset(cfg: DataConfig, progress: bool = True) -> Path:
    """The data root; the built-in synthetic dataset is generated there first when configured and missing."""
    root = Path(cfg.root)
    if cfg.synthetic is not None and not (root / "train").is_dir():
        from data.synthetic import generate

        s = cfg.synthetic
        print(f"generating the synthetic dataset into {root} ({s.ids} persons, {s.test_ids} test, {s.size}px)")
        generate(root, ids=s.ids, test_ids=s.test_ids, size=s.size, seed=s.seed, progress=progress)
    return root


def prepare_fold(cfg: Config, runtime, progress: bool = True) -> FoldData:
    """Rank 0 generates and caches; the other ranks wait, then open the same files."""
    d = cfg.data
    if runtime.is_main:
        ensure_dataset(d, progress)
    runtime.barrier()
    samples = scan_split(d.root, "train")
    train_idx, val_idx = group_kfold([s.group for s in samples], d.n_splits, d.fold)
    val_samples = [samples[i] for i in val_idx]
    pseudo = [s for root in d.pseudo_roots for s in scan_split(root, "train")]
    train_idx = np.concatenate([train_idx, np.arange(len(samples), len(samples) + len(pseudo))]).astype(np.int64)
    samples = samples + pseudo  # after the split: pseudo-labelled images only ever train

    def open_all():
        cache = open_cache(samples, cfg.task.classes, d.image_size, d.cache_dir, d.cache_workers, progress)
        same_size = all((e.height, e.width) == (e.orig_height, e.orig_width) for e in cache.entries)
        truth = cache if same_size else open_cache(val_samples, cfg.task.classes, None, d.cache_dir,
                                                   d.cache_workers, progress)
        return cache, truth, same_size

    if runtime.is_main:
        cache, truth, same_size = open_all()
    runtime.barrier()
    if not runtime.is_main:
        cache, truth, same_size = open_all()
    truth_index = {int(i): (int(i) if same_size else n) for n, i in enumerate(val_idx)}
    if runtime.is_main and cache.warnings:
        for line in cache.warnings[:20]:
            print(f"warning: {line}")
        print(f"warning: {len(cache.warnings)} annotation problem(s) were skipped or clipped (listed in "
              f"{cache.folder / 'index.json'})")
    return FoldData(cache=cache, truth=truth, truth_index=truth_index, train_indices=train_idx, val_indices=val_idx,
                    meta=read_meta(d.root))
