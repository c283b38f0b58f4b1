"""Per-epoch metrics appended to `metrics.jsonl` in the run directory: always written, the file that analyze.py
and run comparisons read. Tracking backends (TensorBoard, MLflow, wandb) are callbacks in tracking/."""
from __future__ import annotations

import json
from pathlib import Path


class RunLogger:
    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

