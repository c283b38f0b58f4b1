"""Weights & Biases: online when an API key is configured, else offline under the run directory (`wandb sync`
later), because training machines often have no network."""
from __future__ import annotations

import netrc
import os

import numpy as np
import wandb

from tracking.backend import Backend
from utils.config import secret_values


def has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbBackend(Backend):
    name = "wandb"

    def open(self, params: dict[str, str]) -> None:
        mode = self.cfg.logging.wandb_mode or ("online" if has_wandb_key() else "offline")
        # wandb records the command line (sys.argv) with the system metadata: a webhook URL given with --set would
        # be saved in the run file; without a literal secret in the config the metadata is kept (params are redacted)
        settings = wandb.Settings(x_disable_meta=bool(secret_values(self.cfg)))
        self.run = wandb.init(project=self.cfg.logging.wandb_project, name=self.identity.name,
                              group=self.identity.group, config=params, dir=str(self.run_dir), mode=mode,
                              reinit="create_new", settings=settings)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        self.run.log({key: wandb.Image(image) for key, image in images.items()}, step=step)

    def close(self, summary: dict, failed: bool) -> None:
        self.run.summary.update(summary)
        self.run.finish(exit_code=1 if failed else 0)
