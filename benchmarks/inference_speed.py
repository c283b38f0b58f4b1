"""Inference of a whole test folder against the model's own forward time, old full-size path against the new one,
side by side in one run.

  forward only: the predictor on an input already in memory (the ceiling),
  end to end:   inference.py's path (decode, resize, predict, full-size masks, RLE, CSV), each path in its own
                process so that each gets its own peak host memory; wall time and the main process's CPU time
                (less sensitive to other load on the machine; decoding workers excluded); the two CSVs are
                compared byte for byte.
  old path:     every class's map upsampled to the image's size in full, thresholded, run-length encoded (the
                previous trainer/inference.py, kept here and in tests as the reference);
  new path:     trainer/fullsize.py (only the boxes where a mask can be positive).

--oracle N: the probability maps are not the checkpoint's but those of a well-trained model's sparsity: the truth
masks of the first N train images of --data, area-downsampled to the model's input size and blurred, saved as an
ensemble's --probs folder; those images are the test set. The forward time is still the checkpoint's (the cost of
a forward pass does not depend on the weights).

    python benchmarks/inference_speed.py --checkpoint runs/demo/best.pt --data datasets/synthetic_2048 [--oracle 6]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from tasks.handbone.reader import rasterize, read_polygons, scan_split
from tasks.handbone.submission import SubmissionWriter
from trainer.inference import (
    PROBS_SCALE,
    ModelMember,
    TestImages,
    check_members,
    load_member,
    load_probs_member,
    member_config,
    parse_thresholds,
    write_submission,
)
from trainer.predictor import to_full_size
from trainer.runtime import setup_runtime
from utils.images import read_gray, resize_image
from utils.rle import encode_rle_batch


def old_submission(members: list, data_root, out, thresholds: torch.Tensor, runtime, num_workers: int) -> int:
    """The previous write_submission: full-size maps for every class, thresholded, RLE in a background thread."""
    classes = check_members(members)
    samples = scan_split(data_root, "test")
    thresholds = thresholds.to(runtime.device).view(-1, 1, 1)
    models = [m for m in members if isinstance(m, ModelMember)]
    loader = DataLoader(TestImages(samples, models, read_gray), batch_size=None, num_workers=num_workers,
                        prefetch_factor=4 if num_workers else None)
    total_weight = sum(m.weight for m in members)
    with SubmissionWriter(out, classes) as writer, ThreadPoolExecutor(1) as background:
        pending = None
        for item in loader:
            size = tuple(item["size"].tolist())
            inputs = iter(item["inputs"])
            probs = None
            for member in members:
                if isinstance(member, ModelMember):
                    p = member.predictor(next(inputs)[None])[0]
                else:
                    p = member.load(item["key"]).to(runtime.device)
                p = to_full_size(p, size).mul_(member.weight)
                probs = p if probs is None else probs.add_(p)
            masks = probs.div_(total_weight) > thresholds
            if pending is not None:
                pending.result()
            pending = background.submit(lambda n, m: writer.write_image(n, encode_rle_batch(m)),
                                        Path(item["key"]).name, masks)
        if pending is not None:
            pending.result()
    return len(samples)


def make_oracle(data: Path, count: int, size: int, classes: list[str], folder: Path) -> Path:
    """A test root of the first `count` train images and a --probs folder of their blurred, downsampled truth."""
    root, probs = folder / "root", folder / "probs"
    for sample in scan_split(data, "train")[:count]:
        image = read_gray(sample.image)
        link = root / "test" / "DCM" / sample.key
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(sample.image.resolve())
        polygons, _ = read_polygons(sample.annotation, classes, *image.shape)
        masks = rasterize(polygons, len(classes), image.shape, image.shape).astype(np.float32)
        low = np.stack([cv2.GaussianBlur(cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA), (5, 5), 1.0)
                        for m in masks])
        path = probs / Path(sample.key).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, probs=np.round(low * PROBS_SCALE).astype(np.uint8))
    (probs / "probs.json").write_text(json.dumps({"classes": classes}))
    return root


def run_path(args) -> None:
    """One path in this process: prints JSON with ms per image and the process's peak host memory."""
    cfg = member_config(args.checkpoint, None, args.overrides + [f"data.root={args.data}"])
    runtime = setup_runtime(cfg.trainer)
    members = [load_probs_member(args.probs)] if args.probs else [load_member(args.checkpoint, cfg, runtime)]
    thresholds = parse_thresholds(cfg.trainer.threshold, None, cfg.task.classes)
    write = write_submission if args.path == "new" else old_submission
    start, cpu = time.perf_counter(), time.process_time()
    n = (write(members, members[0].task, args.data, args.out, runtime, thresholds, num_workers=args.workers,
               progress=False)
         if args.path == "new" else write(members, args.data, args.out, thresholds, runtime, args.workers))
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps({"ms": seconds / n * 1000, "cpu_ms": cpu / n * 1000, "images": n, "peak_gb": peak_memory_gb()}))


def peak_memory_gb() -> float:
    """This process's peak resident memory: VmHWM, which (unlike ru_maxrss, inherited through fork and exec)
    starts afresh in a new program."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="dataset root with test/DCM (with --oracle: train/)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10, help="forward passes timed for the ceiling")
    p.add_argument("--oracle", type=int, metavar="N", help="use N train images' truth as trained-like maps")
    p.add_argument("--path", choices=["old", "new"], help=argparse.SUPPRESS)  # one path, in a child process
    p.add_argument("--probs", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.path:
        return run_path(args)

    cfg = member_config(args.checkpoint, None, args.overrides + [f"data.root={args.data}"])
    runtime = setup_runtime(cfg.trainer)
    member = load_member(args.checkpoint, cfg, runtime)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, extra = args.data, []
        if args.oracle:
            data = make_oracle(Path(args.data), args.oracle, cfg.data.image_size, cfg.task.classes, tmp)
            extra = ["--probs", str(tmp / "probs")]
        samples = scan_split(data, "test")
        first = read_gray(samples[0].image)
        x = torch.from_numpy(resize_image(first, cfg.data.image_size))[None, None].to(runtime.device)
        member.predictor(x)
        sync = torch.cuda.synchronize if runtime.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(args.repeats):
            member.predictor(x)
        sync()
        forward = (time.perf_counter() - start) / args.repeats * 1000

        results = {}
        for path in ("old", "new"):
            command = [sys.executable, __file__, "--checkpoint", str(args.checkpoint), "--data", str(data),
                       "--workers", str(args.workers), "--path", path, "--out", str(tmp / f"{path}.csv"), *extra]
            for o in args.overrides:
                command += ["--set", o]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"{path} path failed:\n{done.stderr[-2000:]}")
            results[path] = json.loads(done.stdout.strip().splitlines()[-1])
        identical = (tmp / "old.csv").read_bytes() == (tmp / "new.csv").read_bytes()

    device = torch.cuda.get_device_name() if runtime.device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    maps = f"oracle maps of {args.oracle} train images" if args.oracle else "the checkpoint's maps"
    print(f"{len(samples)} test images of {first.shape[1]}x{first.shape[0]}, model {cfg.model.arch}/"
          f"{cfg.model.encoder} at {cfg.data.image_size}px, tta {cfg.predict.tta}, {maps}, {device}, "
          f"torch {torch.__version__}")
    print(f"  forward only            {forward:8.1f} ms/image")
    old, new = results["old"], results["new"]
    for name, r in (("old path", old), ("new path", new)):
        print(f"  end to end, {name}  {r['ms']:8.1f} ms/image  ({r['ms'] / forward:.1f}x forward; main process CPU "
              f"{r['cpu_ms']:.1f} ms/image; peak host memory {r['peak_gb']:.2f} GB)")
    print(f"  new / old speed-up      {old['ms'] / new['ms']:.1f}x;  CSVs byte-identical: {identical}")
    if args.oracle:  # the maps were read, not predicted: add the model's forward pass for the whole inference
        print(f"  new path + forward      {new['ms'] + forward:8.1f} ms/image  ({(new['ms'] + forward) / forward:.1f}x "
              f"forward; old path + forward {(old['ms'] + forward) / forward:.1f}x)")


if __name__ == "__main__":
    main()
