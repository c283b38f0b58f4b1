"""From the config to cached, split data: generate the built-in dataset if asked, find the samples and split them
(both owned by the task's layout, tasks/), oversample, cache."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.cache import SampleCache, open_cache
from data.oversample import class_factors, oversample_indices
from utils.config import Config, DataConfig


@dataclass
class FoldData:
    cache: SampleCache  # every training image at data.image_size
    truth: SampleCache  # validation masks at the original size (the score is computed there)
    truth_index: dict  # cache index -> truth index
    train_indices: np.ndarray  # with repeats when data.oversample is set
    val_indices: np.ndarray
    meta: dict
    n_labelled: int  # cache indices from here on are pseudo-labelled images (data.pseudo_roots), whatever the format

    def labelled_train_indices(self) -> np.ndarray:
        """The training images with their own labels, each once: oversampling repeats and pseudo-labels left out
        (what data cleansing may question)."""
        return np.unique(self.train_indices[self.train_indices < self.n_labelled])


def ensure_dataset(cfg: DataConfig, layout, progress: bool = True) -> Path:
    """The data root; the built-in synthetic dataset is generated there first when configured and missing."""
    layout.ensure(cfg, progress)
    return Path(cfg.root)


def prepare_fold(cfg: Config, layout, runtime, progress: bool = True) -> FoldData:
    """Rank 0 generates and caches; the other ranks wait, then open the same files. `layout`: the task's
    (tasks.build_task(cfg).layout)."""
    d = cfg.data
    if runtime.is_main:
        ensure_dataset(d, layout, progress)
    runtime.barrier()
    samples, train_idx, val_idx, read_warnings = layout.fold(d, cfg.trainer.seed)
    val_samples = [samples[i] for i in val_idx]
    pseudo = [s for source in d.pseudo_roots for s in layout.pseudo_samples(d, source)]
    n_labelled = len(samples)
    train_idx = np.concatenate([train_idx, np.arange(n_labelled, n_labelled + len(pseudo))]).astype(np.int64)
    samples = samples + pseudo  # after the split: pseudo-labelled images only ever train

    def open_all():
        cache = open_cache(samples, layout, d.image_size, d.cache_dir, d.cache_workers, progress)
        same_size = all((e.height, e.width) == (e.orig_height, e.orig_width) for e in cache.entries)
        truth = cache if same_size else open_cache(val_samples, layout, None, d.cache_dir, d.cache_workers, progress)
        return cache, truth, same_size

    if runtime.is_main:
        cache, truth, same_size = open_all()
    runtime.barrier()
    if not runtime.is_main:
        cache, truth, same_size = open_all()
    truth_index = {int(i): (int(i) if same_size else n) for n, i in enumerate(val_idx)}
    warnings = read_warnings + cache.warnings
    if runtime.is_main and warnings:
        for line in warnings[:20]:
            print(f"warning: {line}")
        print(f"warning: {len(warnings)} annotation problem(s) were skipped or clipped (listed in "
              f"{cache.folder / 'index.json'})")
    if d.oversample is not None:
        train_idx = _oversample(cfg, cache, train_idx, runtime.is_main)
    return FoldData(cache=cache, truth=truth, truth_index=truth_index, train_indices=train_idx, val_indices=val_idx,
                    meta=layout.meta(d.root), n_labelled=n_labelled)


def _oversample(cfg: Config, cache: SampleCache, train_idx: np.ndarray, verbose: bool) -> np.ndarray:
    o = cfg.data.oversample
    presence = cache.class_presence()
    factors = class_factors(presence[train_idx], cfg.task.classes, o.factors, o.inverse_frequency, o.max_factor)
    out = oversample_indices(train_idx, presence, factors, cfg.trainer.seed)
    if verbose:
        print(f"oversampling: {len(train_idx)} training images -> {len(out)} per epoch (factors "
              + ", ".join(f"{c} {f:.2g}" for c, f in zip(cfg.task.classes, factors) if f != 1) + ")")
    return out
