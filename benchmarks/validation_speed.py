"""Trainer validation of full-size images, old full-size path against the new one, side by side in one run.

  old path: every class's map upsampled to the image's size in full, thresholded, Dice against the unpacked truth
            (the previous Trainer.validate, kept here as the reference);
  new path: Trainer.validate (trainer/fullsize.py: boxes, crop counts, the truth's area from its bits).
Both run on the same Trainer, model and validation loader; the scores must be equal.

--oracle: the predictor returns the validation images' truth masks, area-downsampled to the model's input size and
blurred (a well-trained model's sparsity) instead of the untrained model's maps.

    python benchmarks/validation_speed.py --data datasets/synthetic_2048 [--oracle]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch

from data.dataset import unpack_mask_bits
from modes.dice import DiceScore
from trainer.predictor import to_full_size
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import load_config


def old_validate(trainer: Trainer) -> tuple[float, list[float]]:
    """The previous Trainer.validate: full-size maps and unpacked truth for every class."""
    score = DiceScore(len(trainer.classes), trainer.runtime.device)
    threshold = trainer.cfg.trainer.threshold
    for batch in trainer.val_loader:
        probs = trainer.predictor(batch["image"])
        for p, index in zip(probs, batch["index"].tolist()):
            truth_i = trainer.data.truth_index[index]
            bits = torch.from_numpy(trainer.data.truth.mask_bits(truth_i).copy()).to(trainer.runtime.device)
            size = trainer.data.truth.original_size(truth_i)
            target = unpack_mask_bits(bits, size[1]).bool()
            score.update(to_full_size(p, size) > threshold, target)
    return score.compute()


class OraclePredictor:
    """Returns, batch after batch in the validation loader's order, the truth's blurred model-resolution maps."""

    def __init__(self, trainer: Trainer):
        size = trainer.cfg.data.image_size
        self.model = None  # Trainer.validate sets it
        self.batches = []
        for batch in trainer.val_loader:
            maps = []
            for index in batch["index"].tolist():
                masks = trainer.data.truth.mask(trainer.data.truth_index[index]).astype(np.float32)
                maps.append(np.stack([cv2.GaussianBlur(cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA),
                                                       (5, 5), 1.0) for m in masks]))
            self.batches.append(torch.from_numpy(np.stack(maps)))
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        probs = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        return probs


def timed(fn, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--data", required=True, help="dataset root with train/ at full size")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--oracle", action="store_true", help="trained-like maps from the truth instead of the model")
    p.add_argument("--repeats", type=int, default=2, help="runs of each path; the fastest counts")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, args.overrides + [f"data.root={args.data}", "data.synthetic=null",
                                                         f"data.cache_dir={tmp}/cache"])
        runtime = setup_runtime(cfg.trainer)
        trainer = Trainer(cfg, Path(tmp) / "run", runtime, progress=False)
        if args.oracle:
            trainer.predictor = OraclePredictor(trainer)
        old_s, old_score = timed(lambda: old_validate(trainer), args.repeats)
        new_s, new_score = timed(trainer.validate, args.repeats)
        n = len(trainer.data.val_indices)
        sizes = {trainer.data.truth.original_size(trainer.data.truth_index[i]) for i in trainer.data.val_indices}

    device = torch.cuda.get_device_name() if runtime.device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    maps = "oracle maps (blurred truth)" if args.oracle else "the untrained model's maps"
    print(f"validation of {n} images of {sorted(sizes)}, {cfg.model.arch}/{cfg.model.encoder} at "
          f"{cfg.data.image_size}px, {maps}, {device}, torch {torch.__version__}")
    print(f"  old path  {old_s * 1000 / n:8.1f} ms/image  (Dice {old_score[0]:.6f})")
    print(f"  new path  {new_s * 1000 / n:8.1f} ms/image  (Dice {new_score[0]:.6f})")
    print(f"  new / old speed-up {old_s / new_s:.1f}x;  per-class scores identical: {old_score == new_score}")


if __name__ == "__main__":
    main()
