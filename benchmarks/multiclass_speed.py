"""Multiclass labels per image: the dense path against argmax_labels, side by side.

    .venv/bin/python benchmarks/multiclass_speed.py [--repeats 20] [--image 512] [--classes 11]

Per image, from the model's softmax maps (one member, or two with weights as an ensemble or flip TTA gives) to
the labels a trash submission needs:
- dense: mean_full_size (every class upsampled to the image's size), argmax, then the CSV's nearest resize to
  256x256 (what inference did before);
- CSV: argmax_labels at the 256x256 pixels the CSV samples only (inference.py without --save-masks);
- full: argmax_labels at every pixel, then the CSV's resize (inference.py --save-masks, validation's mIoU).
Each case first asserts that the three give identical labels. The maps are the softmax of smooth random logits
with a background bias (regions of a few objects, as a trash photograph's prediction; a second member is the same
scene with noisier logits), and of white noise (a boundary at every cell: the worst case). Reports medians in ms,
the ratio dense / new, and the share of full-size pixels on quads without a clear winner.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modes.fullsize import axis_table
from modes.multiclass import _quad_winners, argmax_labels, mean_full_size
from tasks.coco.submission import submission_lines, to_submission_size


def regions(classes: int, side: int, member: int) -> torch.Tensor:
    """Softmax of logits varying over about a sixteenth of the side, the background favoured; a second member
    (as flip TTA or a second model gives) sees the same scene with logits off by about one."""
    coarse = max(2, side // 16)
    logits = torch.randn(1, classes, coarse, coarse, generator=torch.Generator().manual_seed(1)) * 6
    logits[:, 0] += 4
    logits = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)[0]
    if member:
        logits = logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(member))
    return logits.softmax(0).contiguous()


def noise(classes: int, side: int, member: int) -> torch.Tensor:
    return torch.rand(classes, side, side, generator=torch.Generator().manual_seed(member)).softmax(0)


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def boundary_share(parts, size) -> float:
    """The share of full-size pixels whose quad has no clear winner in some member (computed one by one)."""
    unclear = torch.zeros(size, dtype=torch.bool)
    for p, _ in parts:
        lo_r, lo_c = (torch.from_numpy(axis_table(n, big)[0]) for n, big in zip(p.shape[-2:], size))
        unclear |= (_quad_winners(p) < 0).index_select(0, lo_r).index_select(1, lo_c)
    return float(unclear.float().mean())


def measure(parts, size, rows, cols, repeats: int) -> tuple[float, float, float]:
    """Median ms of the dense, CSV and full paths, after asserting that their labels are identical."""
    def dense():
        return to_submission_size(mean_full_size(parts, size).argmax(0).to(torch.uint8).numpy())

    def csv():
        return argmax_labels(parts, size, rows, cols).numpy()

    def full():
        return to_submission_size(argmax_labels(parts, size).numpy())

    reference = dense()
    assert np.array_equal(csv(), reference) and np.array_equal(full(), reference)
    return tuple(median_ms(f, repeats) for f in (dense, csv, full))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--image", type=int, default=512, help="side of the (square) photograph")
    ap.add_argument("--classes", type=int, default=11)
    args = ap.parse_args()
    size = (args.image, args.image)
    rows, cols = submission_lines(size[0]), submission_lines(size[1])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), image {size[0]}x{size[1]}, "
          f"{args.classes} classes, median of {args.repeats}")
    print("| maps | model output | members | dense ms | CSV ms | dense / CSV | full ms | dense / full "
          "| boundary pixels |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, make in (("regions", regions), ("noise", noise)):
        for side in (128, 256, 512):
            for members in (1, 2):
                parts = [(make(args.classes, side, member), weight) for member, weight in enumerate((1.0, 0.5))]
                parts = parts[:members]
                t_dense, t_csv, t_full = measure(parts, size, rows, cols, args.repeats)
                print(f"| {kind} | {side}x{side} | {members} | {t_dense:.1f} | {t_csv:.1f} | {t_dense / t_csv:.1f}x "
                      f"| {t_full:.1f} | {t_dense / t_full:.1f}x | {boundary_share(parts, size):.1%} |", flush=True)


if __name__ == "__main__":
    main()
