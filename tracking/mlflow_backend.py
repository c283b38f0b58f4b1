"""MLflow: a local SQLite store in the runs folder by default (`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`
shows every run, single, k-fold or sweep trial, with no server to start), or `logging.mlflow_uri` /
$MLFLOW_TRACKING_URI for a team server. config.yaml is logged as an artifact at the end; best.pt too with
`logging.mlflow_log_checkpoint: true`, else only its path (tag `best_checkpoint`), so the store does not hold a
second copy of every checkpoint."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tracking.backend import Backend

MAX_PARAM_LENGTH = 500  # MLflow's limit on a parameter value


def tracking_uri(mlflow_uri: str | None, runs_root: Path) -> str:
    if mlflow_uri:
        return mlflow_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{(runs_root / 'mlflow.db').as_posix()}"


def artifact_location(uri: str) -> str | None:
    """For an SQLite store: `mlartifacts/` beside the database (MLflow's default is ./mlruns in the working
    directory); for a server: its own default (None)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return None


class MlflowBackend(Backend):
    name = "mlflow"

    def open(self, params: dict[str, str]) -> None:
        uri = tracking_uri(self.cfg.logging.mlflow_uri, self.identity.runs_root)
        self.client = MlflowClient(uri)
        experiment = self.client.get_experiment_by_name(self.cfg.logging.wandb_project)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else self.client.create_experiment(self.cfg.logging.wandb_project, artifact_location(uri)))
        tags = {"run_dir": str(self.run_dir.resolve()), "config": self.cfg.name, **self.identity.tags}
        self.run_id = self.client.create_run(experiment_id, run_name=self.identity.name, tags=tags).info.run_id
        items = [Param(k, v[:MAX_PARAM_LENGTH]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_metric_key(k), v, now, step) for k, v in metrics.items()])

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for key, image in images.items():
            self.client.log_image(self.run_id, image, f"overlays/epoch{step:04d}_{_file_name(key)}.png")

    def close(self, summary: dict, failed: bool) -> None:
        if not failed:
            best = self.run_dir / "best.pt"
            if best.is_file() and self.cfg.logging.mlflow_log_checkpoint:
                self.client.log_artifact(self.run_id, str(best))
            elif best.is_file():
                self.client.set_tag(self.run_id, "best_checkpoint", str(best.resolve()))
            if (self.run_dir / "config.yaml").is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / "config.yaml"))
        for key in (k for k in summary if k.startswith("best_")):  # best_dice or best_miou, by the task mode
            self.client.set_tag(self.run_id, key, f"{summary[key]:.6f}")
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _metric_key(key: str) -> str:
    return re.sub(r"[^\w\-./ ]", "_", key)


def _file_name(key: str) -> str:
    return re.sub(r"[^\w\-.]", "_", key)
