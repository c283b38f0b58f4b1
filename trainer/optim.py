"""Optimizers by name: torch.optim for the classics, timm.optim for Lion (it beat Adam in the published runs)."""
from __future__ import annotations

import difflib

import torch
from timm.optim import Lion
from torch import nn

from utils.config import OptimizerConfig
from utils.errors import ConfigError

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "lion": Lion,
    "rmsprop": torch.optim.RMSprop,
    "sgd": torch.optim.SGD,
    "radam": torch.optim.RAdam,
}


def check_optimizer(cfg: OptimizerConfig) -> None:
    """Build the optimizer on one dummy parameter: a wrong name or keyword fails before the data is cached."""
    build_optimizer(cfg, nn.Linear(1, 1))


def build_optimizer(cfg: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    name = cfg.name.lower()
    if name not in OPTIMIZERS:
        close = difflib.get_close_matches(name, OPTIMIZERS, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(OPTIMIZERS)})"
        raise ConfigError(f"optimizer.name: unknown optimizer {cfg.name!r}{hint}")
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        return OPTIMIZERS[name](params, lr=cfg.lr, weight_decay=cfg.weight_decay, **cfg.params)
    except (TypeError, ValueError, IndexError, KeyError) as e:  # torch's own checks of the keywords
        raise ConfigError(f"optimizer.params: {' '.join(str(e).split())}") from None
