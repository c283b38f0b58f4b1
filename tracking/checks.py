"""Whether a config's tracking can run here: every backend's package installed, the webhook's variable set.
Light to import (no torch), so entry scripts and sweep.py check it before any data or model work."""
from __future__ import annotations

import importlib.util

from tracking.notify import resolve_webhook
from utils.config import Config
from utils.errors import ConfigError

# backend -> (module importing its package, class, the package to install)
BACKENDS = {"tensorboard": ("tracking.tensorboard_backend", "TensorBoardBackend", "tensorboard"),
            "mlflow": ("tracking.mlflow_backend", "MlflowBackend", "mlflow"),
            "wandb": ("tracking.wandb_backend", "WandbBackend", "wandb")}


def check_tracking(cfg: Config) -> str | None:
    """Every backend's package is installed and the webhook resolves: a ConfigError otherwise. Returns the webhook
    URL (None without notifications)."""
    for name in dict.fromkeys(cfg.logging.backends):
        package = BACKENDS[name][2]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(f"logging.backends: {name} needs the {package} package "
                              f"(pip install -r requirements.txt, or pip install {package})")
    return None if cfg.logging.notify is None else resolve_webhook(cfg.logging.notify.webhook)
