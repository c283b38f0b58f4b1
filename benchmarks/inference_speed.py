"""Inference of a whole test folder against the model's own forward time, side by side in one run.

  forward only: the predictor on an input already in memory (the ceiling),
  end to end:   inference.py's path (decode, resize, predict, upsample to full size, threshold, RLE, CSV),
and the peak host memory of the process.

    python benchmarks/inference_speed.py --checkpoint runs/demo/best.pt --data datasets/synthetic_2048
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from data.handbone import read_image, resize_image, scan_split
from trainer.inference import load_member, member_config, parse_thresholds, write_submission
from trainer.runtime import setup_runtime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="dataset root with test/DCM")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="forward passes timed for the ceiling")
    args = p.parse_args()

    cfg = member_config(args.checkpoint, None, args.overrides + [f"data.root={args.data}"])
    runtime = setup_runtime(cfg.trainer)
    member = load_member(args.checkpoint, cfg, runtime)
    samples = scan_split(args.data, "test")
    first = read_image(samples[0].image)
    x = torch.from_numpy(resize_image(first, cfg.data.image_size))[None, None].to(runtime.device)

    def sync():
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    member.predictor(x)
    sync()
    start = time.perf_counter()
    for _ in range(args.repeats):
        member.predictor(x)
    sync()
    forward = (time.perf_counter() - start) / args.repeats

    thresholds = parse_thresholds(cfg.trainer.threshold, None, cfg.task.classes)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        n = write_submission([member], args.data, Path(tmp) / "sub.csv", thresholds, runtime,
                             num_workers=args.workers, progress=False)
        sync()
        total = (time.perf_counter() - start) / n
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    device = torch.cuda.get_device_name() if runtime.device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"{n} test images of {first.shape[1]}x{first.shape[0]}, model {cfg.model.arch}/{cfg.model.encoder} at "
          f"{cfg.data.image_size}px, tta {cfg.predict.tta}, {device}, torch {torch.__version__}")
    print(f"  forward only   {forward * 1000:8.1f} ms/image")
    print(f"  end to end     {total * 1000:8.1f} ms/image  ({1 / total:.2f} images/s)")
    print(f"  end to end / forward  {total / forward:.2f}x")
    print(f"  peak host memory      {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
