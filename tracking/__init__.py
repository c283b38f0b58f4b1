"""Tracking backends (TensorBoard, MLflow, wandb) and webhook notifications, as trainer callbacks chosen by
`logging.backends` and `logging.notify`; metrics.jsonl is always written by the trainer itself."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from tracking.images import ValidationImages
from trainer.callbacks import Callback
from utils.config import Config
from utils.errors import ConfigError

# backend -> (module importing its package, class, the package to install)
BACKENDS = {"tensorboard": ("tracking.tensorboard_backend", "TensorBoardBackend", "tensorboard"),
            "mlflow": ("tracking.mlflow_backend", "MlflowBackend", "mlflow"),
            "wandb": ("tracking.wandb_backend", "WandbBackend", "wandb")}


def build_tracking(cfg: Config, run_dir: Path, is_main: bool = True) -> list[Callback]:
    """The callbacks of `cfg.logging` (none off rank 0); a missing package is a ConfigError on every rank,
    raised before any data or model work."""
    backends = list(dict.fromkeys(cfg.logging.backends))
    for name in backends:
        package = BACKENDS[name][2]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"logging.backends: {name} needs the {package} package "
                              f"(pip install -r requirements.txt, or pip install {package})")
    notify_url = None
    if cfg.logging.notify is not None:
        from tracking.notify import resolve_webhook

        notify_url = resolve_webhook(cfg.logging.notify.webhook)
    if not is_main:
        return []
    images = ValidationImages(cfg.logging.image_every)
    callbacks: list[Callback] = []
    for name in backends:
        module, cls, _ = BACKENDS[name]
        callbacks.append(getattr(importlib.import_module(module), cls)(cfg, run_dir, images))
    if notify_url:
        from tracking.notify import Notifier

        callbacks.append(Notifier(cfg.logging.notify, notify_url, cfg.name))
    return callbacks
