"""Per-epoch metrics: appended to `metrics.jsonl` in the run directory, and to wandb when enabled.

wandb runs offline (files under the run directory, sync later) when no API key is configured, because these
machines often have no network.
"""
from __future__ import annotations

import json
import netrc
import os
from pathlib import Path

from utils.config import Config, to_dict
from utils.errors import ConfigError


class RunLogger:
    def __init__(self, run_dir: Path, cfg: Config, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.wandb_run = None
        if enabled and cfg.logging.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb: true needs the wandb package (pip install wandb)") from None
            mode = cfg.logging.wandb_mode or ("online" if _has_wandb_key() else "offline")
            self.wandb_run = wandb.init(project=cfg.logging.wandb_project, name=cfg.name, config=to_dict(cfg),
                                        dir=str(run_dir), mode=mode)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb_run is not None:
            flat = {k: v for k, v in record.items() if not isinstance(v, dict)}
            flat.update({f"val_dice/{k}": v for k, v in record.get("val_dice_per_class", {}).items()})
            self.wandb_run.log(flat, step=record["epoch"])

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False
