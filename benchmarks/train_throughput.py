"""Training throughput of a config, measured side by side in one run (images/s):

  (a) model only: forward/backward/step on one batch already on the device (the ceiling),
  (b) cached loader alone (the framework's DataLoader over the cache),
  (c) end to end: the trainer's own train_step over the cached loader,
  (d) the published baseline's loader alone: per item, decode the PNG, fill the polygons at full size, resize
      with albumentations (what every epoch did in the competition's public code),
  (e) end to end with the baseline loader (skipped with --skip-model or --skip-baseline-train).

Prints the ratios (c)/(a), (b)/(d) and (c)/(e).

    python benchmarks/train_throughput.py --config configs/unetpp_lion_1024.yaml --set data.root=/data/hand
    python benchmarks/train_throughput.py --config configs/demo.yaml --steps 10                      # CPU, small
    python benchmarks/train_throughput.py --config configs/unetpp_lion_1024.yaml --skip-model \\
        --set data.root=datasets/synthetic_2048 --set data.synthetic='{ids: 8, test_ids: 1, size: 2048}'
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.handbone.reader import scan_split
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import load_config


class BaselineDataset(Dataset):
    """The competition baseline's loader, kept only as the comparison point: everything, every epoch."""

    def __init__(self, samples, classes, size):
        self.samples, self.classes, self.resize = samples, {c: i for i, c in enumerate(classes)}, A.Resize(size, size)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        s = self.samples[i]
        image = cv2.imread(str(s.image)) / 255.0
        label = np.zeros(image.shape[:2] + (len(self.classes),), dtype=np.uint8)
        for ann in json.loads(s.annotation.read_text())["annotations"]:
            plane = np.zeros(image.shape[:2], dtype=np.uint8)
            cv2.fillPoly(plane, [np.array(ann["points"])], 1)
            label[..., self.classes[ann["label"]]] = plane
        out = self.resize(image=image, mask=label)
        image = torch.from_numpy(out["image"].transpose(2, 0, 1)[:1].astype(np.float32).copy())
        return {"image": image, "mask": torch.from_numpy(out["mask"].transpose(2, 0, 1).copy())}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(fn, steps, warmup, batch_size, device) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def cycling(loader):
    return iter(itertools.chain.from_iterable(itertools.repeat(loader)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--steps", type=int, default=20, help="timed batches per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--skip-model", action="store_true", help="loaders only (for slow devices)")
    p.add_argument("--skip-baseline-train", action="store_true", help="skip (e), the slowest measurement")
    args = p.parse_args()

    cfg = load_config(args.config, args.overrides)
    runtime = setup_runtime(cfg.trainer)
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="throughput-")), runtime, progress=False)
    bs, device = cfg.data.batch_size, runtime.device
    results = {}

    loader = cycling(trainer.train_loader)
    results["b_cached_loader"] = rate(lambda: next(loader), args.steps, args.warmup, bs, device)
    samples = scan_split(cfg.data.root, "train")
    baseline = DataLoader(BaselineDataset(samples, cfg.task.classes, cfg.data.crop_size or cfg.data.image_size),
                          batch_size=bs, shuffle=True, num_workers=cfg.data.num_workers, drop_last=True)
    baseline_iter = cycling(baseline)
    results["d_baseline_loader"] = rate(lambda: next(baseline_iter), args.steps, args.warmup, bs, device)

    if not args.skip_model:
        fixed = next(iter(trainer.train_loader))
        fixed = {k: v.to(device) for k, v in fixed.items()}
        trainer.model.train()
        results["a_model_only"] = rate(lambda: trainer.train_step(fixed), args.steps, args.warmup, bs, device)
        results["c_end_to_end"] = rate(lambda: trainer.train_step(next(loader)), args.steps, args.warmup, bs, device)
        if not args.skip_baseline_train:
            results["e_baseline_end_to_end"] = rate(lambda: trainer.train_step(_as_uint8(next(baseline_iter))),
                                                    args.steps, args.warmup, bs, device)

    print(f"config {args.config} {' '.join(args.overrides)}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{os.cpu_count()} CPU cores"
    print(f"device {device} ({where}), "
          f"torch {torch.__version__}, batch {bs}, input {cfg.data.crop_size or cfg.data.image_size}px, "
          f"amp {cfg.trainer.amp}, channels_last {cfg.trainer.channels_last}, compile {cfg.trainer.compile}, "
          f"workers {cfg.data.num_workers}")
    for key, value in results.items():
        print(f"  {key:24s} {value:9.1f} images/s")
    r = results
    if "a_model_only" in r:
        print(f"  end-to-end / model-only      {r['c_end_to_end'] / r['a_model_only']:.2f}")
    print(f"  cached / baseline loader     {r['b_cached_loader'] / r['d_baseline_loader']:.1f}x")
    if "e_baseline_end_to_end" in r:
        print(f"  end-to-end vs baseline       {r['c_end_to_end'] / r['e_baseline_end_to_end']:.1f}x")


def _as_uint8(batch):
    """The baseline yields float images in [0, 1]; hand the trainer the same pixels as uint8."""
    return {"image": (batch["image"] * 255).round().to(torch.uint8), "mask": batch["mask"]}


if __name__ == "__main__":
    main()
