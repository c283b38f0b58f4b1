"""TensorBoard: event files in the run directory, so `tensorboard --logdir runs` shows every run."""
from __future__ import annotations

import numpy as np
from torch.utils.tensorboard import SummaryWriter

from tracking.backend import Backend


class TensorBoardBackend(Backend):
    name = "tensorboard"

    def open(self, params: dict[str, str]) -> None:
        self.writer = SummaryWriter(log_dir=str(self.run_dir))
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        for key, image in images.items():
            self.writer.add_image(key, image, step, dataformats="HWC")
        self.writer.flush()

    def close(self, summary: dict, failed: bool) -> None:
        key = next(k for k in summary if k.startswith("best_"))  # best_dice or best_miou, by the task mode
        title = {"best_dice": "Dice", "best_miou": "mIoU"}.get(key, key)
        self.writer.add_text("summary", f"best {title} {summary[key]:.4f}" + (" (crashed)" if failed else ""))
        self.writer.close()
