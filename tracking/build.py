"""The tracking callbacks of one run, built by the entry script (train.py, a k-fold run, a sweep trial) and handed
to the Trainer through its `callbacks`: the caller knows where the run sits among the others, so every run of a
runs folder, single, fold or trial, lands in one MLflow store under a name that says which folder it is."""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from tracking.backend import RunIdentity
from tracking.checks import BACKENDS, check_tracking
from tracking.images import ValidationImages
from tracking.notify import Notifier
from trainer.callbacks import Callback
from utils.config import Config


def build_tracking(cfg: Config, run_dir: str | Path, is_main: bool = True, runs_root: str | Path | None = None,
                   group: str | None = None) -> list[Callback]:
    """The callbacks of `cfg.logging` for the run in `run_dir` (none off rank 0; the checks of check_tracking on
    every rank). `runs_root`, the folder of runs the store belongs to (default: the run folder's parent), holds
    the default MLflow database and names the run by its path below it (`demo`, `demo_kfold/fold0`,
    `demo-losses/trial-3`); `group` (a k-fold run, a study) is a tag on MLflow and wandb's run group."""
    notify_url = check_tracking(cfg)
    if not is_main:
        return []
    identity = RunIdentity.of(Path(run_dir), Path(runs_root) if runs_root is not None else None, group)
    images = ValidationImages(cfg.logging.image_every)
    callbacks: list[Callback] = []
    for name in dict.fromkeys(cfg.logging.backends):
        module, cls, _ = BACKENDS[name]
        callbacks.append(getattr(importlib.import_module(module), cls)(cfg, Path(run_dir), images, identity))
    if notify_url:
        callbacks.append(Notifier(cfg.logging.notify, notify_url, cfg.name))
    return callbacks


def tracking_factory(is_main: bool, runs_root: str | Path, group: str | None = None
                     ) -> Callable[[Config, Path], list[Callback]]:
    """`(config, run_dir) -> callbacks` for runs started one after another (the folds of trainer.kfold)."""
    return lambda cfg, run_dir: build_tracking(cfg, run_dir, is_main, runs_root, group)
