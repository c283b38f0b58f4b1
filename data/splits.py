"""Validation splits: GroupKFold by group (the hand bones' person: both hands on one side), and multilabel-stratified
k-fold over class presence (every class's images spread evenly over the folds)."""
from __future__ import annotations

import numpy as np
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold
from sklearn.model_selection import GroupKFold

from utils.errors import ConfigError, DataError


def group_kfold(groups: list[str], n_splits: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, validation indices) of fold `fold`, the split scikit-learn's GroupKFold makes."""
    if not 0 <= fold < n_splits:
        raise ConfigError(f"data.fold: {fold} is out of range for data.n_splits={n_splits} (0..{n_splits - 1})")
    n_groups = len(set(groups))
    if n_groups < n_splits:
        raise DataError(f"only {n_groups} persons (ID folders) for data.n_splits={n_splits}: "
                        "need at least one per fold")
    splits = list(GroupKFold(n_splits=n_splits).split(np.zeros(len(groups)), groups=groups))
    return splits[fold]


def stratified_kfold(presence: np.ndarray, n_splits: int, fold: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices) of `fold`: iterative-stratification's MultilabelStratifiedKFold over
    each image's class presence, so every class's images spread evenly over the folds."""
    if not 0 <= fold < n_splits:
        raise ConfigError(f"data.fold: {fold} is out of range for data.n_splits={n_splits} (0..{n_splits - 1})")
    if len(presence) < n_splits:
        raise DataError(f"only {len(presence)} images for data.n_splits={n_splits}")
    folds = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold_of = np.zeros(len(presence), np.int64)
    # one class (binary mode): its absence as a second column, since iterstrat takes only two or more labels
    labels = np.concatenate([presence, 1 - presence], axis=1) if presence.shape[1] == 1 else presence
    for f, (_, val) in enumerate(folds.split(np.zeros(len(presence)), labels)):
        fold_of[val] = f
    fold_of = balance_folds(presence, fold_of, n_splits)
    return np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)


def balance_folds(presence: np.ndarray, fold_of: np.ndarray, n_splits: int, max_passes: int = 50) -> np.ndarray:
    """Swap images between folds while it lowers the squared distance of every class's per-fold count from even.

    Iterative stratification places the rarest classes first, so the frequent classes (which images share with
    the rare ones) can end several images off even: 4 of 37 on the synthetic set. No maintained library refines
    a split, hence this greedy pass; a swap keeps the fold sizes, and each image's best swap is found at once
    with numpy: moving i (fold a) and j (fold b) changes the sum of squares by 2 (D[a] - D[b]).d + 2 |d|^2, with
    d = presence[j] - presence[i] and D the (fold, class) deviation from even.
    """
    p = presence.astype(np.float64)
    fold_of = fold_of.copy()
    dev = np.stack([p[fold_of == f].sum(0) for f in range(n_splits)]) - p.sum(0) / n_splits
    for _ in range(max_passes):
        improved = False
        for i in range(len(p)):
            a = fold_of[i]
            d = p - p[i]
            gain = 2 * ((dev[a] - dev[fold_of]) * d).sum(1) + 2 * (d * d).sum(1)
            gain[fold_of == a] = np.inf
            j = int(np.argmin(gain))
            if gain[j] < -1e-9:
                b = fold_of[j]
                dev[a] += d[j]
                dev[b] -= d[j]
                fold_of[i], fold_of[j] = b, a
                improved = True
        if not improved:
            break
    return fold_of
