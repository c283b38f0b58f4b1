"""Checkpoints: plain dicts of tensors, numbers and strings, loadable with `torch.load(weights_only=True)`,
written to a temporary name and renamed so that a crash never leaves a truncated `best.pt`."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from utils.errors import UserError


def save_checkpoint(state: dict, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"{path}: not a checkpoint of this framework (no model weights or config inside)")
    return state


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
