"""analyze.py's cost against one validation pass of the trainer, side by side in one run, on the same fold and
checkpoint, and the host memory (RSS) the analysis adds while it runs.

  validation: Trainer.validate (predict, upsample to full size, score), what every validated epoch costs;
  analysis:   analysis.evaluate.analyze_fold without and with the training-image pass (--cleansing), then the
              figures and the page (write_report); the report for the validation fold is the first plus the last
              (the issue's target: at most 3x one validation pass).

--oracle: every predictor call (validation and analysis) returns the images' own training-resolution masks,
blurred (a well-trained model's sparsity), instead of the checkpoint's maps: an untrained checkpoint's maps exceed
1/100 nearly everywhere, which makes the Dice-against-threshold boxes whole images.

    python benchmarks/analyze_speed.py --run runs/demo [--data ROOT] [--oracle]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np
import torch

from analysis.evaluate import analyze_fold
from analysis.report import write_report
from analysis.run import open_run
from data.dataset import ImageDataset
from modes.fullsize import FullSizeProbs, one_thread
from trainer import fullsize
from trainer.checkpoint import load_checkpoint, unwrap
from trainer.inference import load_member
from trainer.runtime import setup_runtime
from trainer.thresholds import per_threshold_dice_boxes
from trainer.trainer import Trainer
from transforms.cpu import build_cpu_transforms


class PeakRss:
    """Samples the process's resident memory every 20 ms (torch's allocations are invisible to tracemalloc)."""

    def __init__(self):
        self.start = self.peak = self.read()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    @staticmethod
    def read() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.read())
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.thread.join()
        return (self.peak - self.start) / 2**20


class OraclePredictor:
    """Returns each image's cached masks, blurred, as its probabilities: the image's loader tensor is looked up by
    its bytes (the validation transforms are deterministic), so it serves every pass in any order."""

    def __init__(self, cfg, data):
        self.model = None  # Trainer.validate sets it
        dataset = ImageDataset(data.cache, np.concatenate([data.val_indices, data.train_indices]),
                               build_cpu_transforms(cfg.transforms.val, "transforms.val"))
        self.index = {item["image"].numpy().tobytes(): item["index"] for item in dataset}
        self.cache = data.cache

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        maps = [np.stack([cv2.GaussianBlur(m.astype(np.float32), (5, 5), 1.0)
                          for m in self.cache.mask(self.index[image.numpy().tobytes()])]) for image in images]
        return torch.from_numpy(np.stack(maps))


def histogram_paths(member, data) -> tuple[float, float]:
    """Dice-against-threshold histograms of the validation images by quads (modes.fullsize.bin_counts) and by
    binning every pixel of the boxes (the fallback path): thread CPU seconds per image, one thread, equal results."""
    dataset = ImageDataset(data.cache, data.val_indices, build_cpu_transforms(member.cfg.transforms.val, "val"))
    images = [(member.predictor(item["image"][None])[0], data.truth_index[item["index"]]) for item in dataset]
    seconds, tables = [], []
    with one_thread(torch.device("cpu")):
        for counts in (fullsize.bin_counts, lambda *_: None):
            with mock.patch("trainer.thresholds.bin_counts", counts):
                started = time.thread_time()
                tables.append([per_threshold_dice_boxes(FullSizeProbs([(p, 1.0)], data.truth.original_size(t)),
                                                        data.truth.mask_bits(t)) for p, t in images])
                seconds.append((time.thread_time() - started) / len(images))
    if not all(torch.equal(a[:, 1:], b[:, 1:]) for a, b in zip(*tables)):
        raise SystemExit("the two histogram paths disagree")
    return seconds[0], seconds[1]


def timed(fn):
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--data")
    p.add_argument("--cleansing", type=int, default=6)
    p.add_argument("--oracle", action="store_true", help="trained-like maps from the truth instead of the model")
    args = p.parse_args()

    run = open_run(args.run, args.data)
    runtime = setup_runtime(run.cfg.trainer)
    checkpoint = run.folder / "best.pt"
    state = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(run.cfg, Path(tmp) / "run", runtime, progress=False)
        unwrap(trainer.model).load_state_dict(state.get("averaged", state["model"]))
        if args.oracle:
            trainer.predictor = OraclePredictor(run.cfg, trainer.data)
        trainer.validate()  # warm-up: the first pass pays for page faults of the cache
        (score, _), t_val = timed(trainer.validate)
    member = load_member(checkpoint, run.cfg, runtime, state=state)
    if args.oracle:
        member.predictor = trainer.predictor
    data = trainer.data
    n_val, n_train = len(data.val_indices), len(data.train_indices)
    memory = PeakRss()
    fold, t_fold = timed(lambda: analyze_fold(member, data, runtime, 6, 0, progress=False))
    rss_fold = memory.stop()
    memory = PeakRss()
    fold, t_full = timed(lambda: analyze_fold(member, data, runtime, 6, args.cleansing, progress=False))
    rss_full = memory.stop()
    with tempfile.TemporaryDirectory() as tmp:
        _, t_page = timed(lambda: write_report(run, fold, checkpoint, Path(tmp)))
    sizes = sorted({data.truth.original_size(data.truth_index[i]) for i in data.val_indices})
    maps = "oracle maps (blurred truth)" if args.oracle else "the checkpoint's maps"
    print(f"{run.folder}: {n_val} validation images of {sizes}, {n_train} training images, {maps}, {runtime.device}, "
          f"validation Dice {score:.4f} (report: {fold.dice_matrix.mean():.4f})")
    print("| step | seconds | x one validation pass | RSS added (MiB) |")
    print("|---|---:|---:|---:|")
    print(f"| Trainer.validate (one validation pass) | {t_val:.2f} | 1.00 | |")
    print(f"| analyze_fold, validation fold only (--cleansing 0) | {t_fold:.2f} | {t_fold / t_val:.2f} | "
          f"{rss_fold:.0f} |")
    print(f"| analyze_fold with {args.cleansing} cleansing candidates (all training images) | {t_full:.2f} | "
          f"{t_full / t_val:.2f} | {rss_full:.0f} |")
    print(f"| figures and page (write_report) | {t_page:.2f} | {t_page / t_val:.2f} | |")
    t_report = t_fold + t_page
    print(f"| **the report for the validation fold** (analysis without cleansing, figures, page) | {t_report:.2f} | "
          f"**{t_report / t_val:.2f}** | |")
    if min(min(size) for size in sizes) < fullsize.MIN_QUAD_SCALE * member.cfg.data.image_size:
        print(f"Dice-against-threshold histograms: quads not used (upsampling < {fullsize.MIN_QUAD_SCALE}x)")
    else:
        quads, pixels = histogram_paths(member, data)
        print(f"Dice-against-threshold histograms, thread CPU per image: by quads {quads * 1000:.0f} ms, every pixel "
              f"of the boxes {pixels * 1000:.0f} ms ({pixels / quads:.1f}x), equal results")



if __name__ == "__main__":
    main()
