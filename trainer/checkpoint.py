"""Checkpoints: plain dicts of tensors, numbers and strings, loadable with `torch.load(weights_only=True)`,
written to a temporary name and renamed so that a crash never leaves a truncated `best.pt`.

`last.pt` holds the full training state (to resume); `best.pt` only what inference needs (INFERENCE_KEYS).
Weights that are not finite (a diverged run) are never loaded for prediction: `check_finite` names the tensor.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from utils.errors import UserError
from utils.files import atomic_path

INFERENCE_KEYS = ("model", "averaged", "config", "classes", "metrics", "epoch", "best_score")


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Atomic save; a full or read-only disk is a one-line UserError naming `path`, with no temporary file left.
    torch.save writes through a Python file object so that the OSError (with its reason) reaches us."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as e:  # torch wraps the file object's OSError in its own error
            cause = e.__cause__ or e.__context__
            if isinstance(cause, (OSError, KeyboardInterrupt)):  # a Ctrl-C mid-write stays a Ctrl-C
                raise cause from None
            raise


def saved_epoch(path: Path) -> int | None:
    """The epoch (1-based) a last.pt holds, read from the file itself (its tensors are only mapped, not read):
    a Ctrl-C can land between the rename of a new last.pt and any note the trainer keeps of it."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"]) + 1
    except Exception:  # absent, or not a checkpoint: nothing to resume from
        return None


def inference_state(state: dict) -> dict:
    """The part of a training state that inference, ensembles and pseudo-labels read (best.pt)."""
    return {k: state[k] for k in INFERENCE_KEYS if k in state}


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
    _check_structure(state, path)
    return state


def nothing_left(state: dict, epochs: int, patience: int | None) -> str | None:
    """Why the run of a last.pt has nothing left to train (all `epochs` done, or stopped early by `patience`
    validations without improvement), or None when it has."""
    done = state["epoch"] + 1
    if done >= epochs:
        return f"the run already finished its {epochs} epoch{'s' if epochs != 1 else ''}"
    stale = state.get("stale_validations", 0)
    if patience is not None and stale >= patience:
        return (f"the run stopped early after epoch {done} of {epochs} (no improvement in {stale} validations; "
                f"--set trainer.early_stop_patience={stale + 1} or more goes on)")
    return None


# What every reader of a checkpoint takes for granted (train.py --resume, inference, ensembles, analyze.py), checked
# once here so that a hand-edited or foreign file is one line naming the key instead of an AttributeError later.
_KEY_TYPES = {"model": dict, "averaged": dict, "config": dict, "classes": list, "optimizer": dict, "schedule": dict,
              "scaler": dict, "averager": dict, "epoch": int, "stale_validations": int, "best_score": (int, float),
              "metrics": (dict, type(None)), "best_record": (dict, type(None))}
_RESUME_KEYS = ("schedule", "scaler", "epoch", "best_score", "stale_validations")  # with "optimizer", in last.pt


def _check_structure(state: dict, path: Path) -> None:
    for key, kind in _KEY_TYPES.items():
        if key in state and (not isinstance(state[key], kind) or isinstance(state[key], bool)):
            raise UserError(f"{path}: {key!r} is a {type(state[key]).__name__}, not what this framework writes "
                            "(a damaged or foreign checkpoint)")
    for key in ("model", "averaged"):
        bad = next((k for k, v in state.get(key, {}).items() if not isinstance(k, str) or not torch.is_tensor(v)),
                   None)
        if bad is not None:
            raise UserError(f"{path}: {key} entry {bad!r} is not a named tensor (a damaged or foreign checkpoint)")
    if not all(isinstance(c, str) for c in state.get("classes", [])):
        raise UserError(f"{path}: 'classes' must be a list of class names")
    if "optimizer" in state:
        missing = [k for k in _RESUME_KEYS if k not in state]
        if missing:
            raise UserError(f"{path}: training state without {', '.join(map(repr, missing))} (a damaged checkpoint)")


def first_nonfinite(weights: dict) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None when all are finite."""
    for name, value in weights.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            return name
    return None


def check_finite(state: dict, path: str | Path) -> None:
    """Refuse a checkpoint whose weights (or averaged weights) hold NaN or inf: it would predict garbage."""
    for key in ("model", "averaged"):
        if isinstance(state.get(key), dict):
            name = first_nonfinite(state[key])
            if name is not None:
                raise UserError(f"{path}: {key} weight {name!r} holds NaN or inf (the training run diverged); "
                                f"use an earlier checkpoint")
    score = state.get("best_score")
    if isinstance(score, float) and not math.isfinite(score):
        raise UserError(f"{path}: best_score is {score} (the training run diverged)")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)
