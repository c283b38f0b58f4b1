"""Validation splits: GroupKFold by person (ID folder), so both hands of one person land on the same side."""
from __future__ import annotations

import numpy as np
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
