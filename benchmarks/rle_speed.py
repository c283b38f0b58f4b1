"""RLE encoding speed: the competition's reference encoder vs utils.rle, side by side.

    .venv/bin/python benchmarks/rle_speed.py [--repeats 50]

First asserts byte-identical output on random, edge-case and bone-shaped masks, then times
one 2048x2048 bone-shaped mask (with the cost of just reading the mask once for scale), a
noisy mask (the worst case), and a 29-class stack: 29 reference encodes vs encode_rle_batch
on the CPU, and on CUDA when available. Reports medians in ms and speed-up ratios.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.rle import decode_rle, encode_rle, encode_rle_batch

SIZE = 2048


def reference_rle(mask):
    """The competition's straightforward encoder (the baseline and the ground truth)."""
    pixels = mask.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def bone(rng, size=SIZE, scale=1.0):
    """A filled rotated ellipse, sized like a hand bone at `scale` (1.0 ~ a radius)."""
    mask = np.zeros((size, size), np.uint8)
    center = (int(rng.integers(size // 4, 3 * size // 4)), int(rng.integers(size // 4, 3 * size // 4)))
    axes = (max(2, int(size * 0.09 * scale)), max(4, int(size * 0.34 * scale)))
    cv2.ellipse(mask, center, axes, float(rng.uniform(-30, 30)), 0, 360, 1, -1)   # long axis ~vertical
    return mask.astype(bool)


def median_ms(fn, repeats, sync=None):
    fn()                                          # warm-up (allocations, lazy init)
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def check_identity(rng):
    """Byte-identity with the reference: the speed numbers mean nothing without it."""
    n = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 64, 2))
        m = rng.random((h, w)) < rng.random()
        assert encode_rle(m) == reference_rle(m), (h, w)
        n += 1
    for shape in [(1, 1), (1, 9), (9, 1), (8, 8), (7, 13), (SIZE, SIZE)]:
        k = shape[0] * shape[1]
        for flat in (np.zeros(k, bool), np.ones(k, bool), np.arange(k) % 2 == 0, np.arange(k) % 2 == 1,
                     np.arange(k) == 0, np.arange(k) == k - 1):
            m = flat.reshape(shape)
            assert encode_rle(m) == reference_rle(m), shape
            n += 1
    for _s in range(10):
        m = bone(rng, scale=rng.uniform(0.1, 1.0))
        text = encode_rle(m)
        assert text == reference_rle(m)
        assert np.array_equal(decode_rle(text, SIZE, SIZE), m.astype(np.uint8))
        n += 1
    noisy = rng.random((SIZE, SIZE)) < 0.5
    assert encode_rle(noisy) == reference_rle(noisy)
    stack = np.stack([bone(rng, scale=rng.uniform(0.1, 1.0)) for _ in range(29)])
    want = [reference_rle(m) for m in stack]
    assert encode_rle_batch(stack) == want
    assert encode_rle_batch(torch.from_numpy(stack)) == want
    if torch.cuda.is_available():
        assert encode_rle_batch(torch.from_numpy(stack).cuda()) == want
    return n + 2


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per row (median)")
    args = parser.parse_args()
    r = args.repeats
    rng = np.random.default_rng(0)

    n_checked = check_identity(rng)
    print(f"byte-identical to the reference on {n_checked} masks (random, edge cases, bone-shaped, batch)")
    print(f"machine: {os.cpu_count()} CPUs, {cpu_name()}; numpy {np.__version__}, torch {torch.__version__}, "
          f"CUDA: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")

    rows = []
    mask = bone(rng)
    t_read = median_ms(lambda: mask.sum(), r)
    t_count = median_ms(lambda: np.count_nonzero(mask), r)
    t_ref = median_ms(lambda: reference_rle(mask), r)
    t_new = median_ms(lambda: encode_rle(mask), r)
    n_runs = len(encode_rle(mask).split()) // 2
    rows.append((f"read mask once: mask.sum() ({SIZE}x{SIZE} bool)", None, t_read, None))
    rows.append(("read mask once: np.count_nonzero(mask)", None, t_count, None))
    rows.append((f"1 bone mask ({n_runs} runs)", t_ref, t_new, "encode_rle"))

    noisy = rng.random((SIZE, SIZE)) < 0.5
    rn = max(3, r // 10)
    rows.append(("1 noisy mask (50% random, worst case)", median_ms(lambda: reference_rle(noisy), rn),
                 median_ms(lambda: encode_rle(noisy), rn), "encode_rle"))

    stack = np.stack([bone(rng, scale=s) for s in np.linspace(0.08, 1.0, 29)])
    t_ref29 = median_ms(lambda: [reference_rle(m) for m in stack], max(3, r // 5))
    rows.append(("29 bone masks, numpy on CPU", t_ref29,
                 median_ms(lambda: encode_rle_batch(stack), max(3, r // 5)), "encode_rle_batch"))
    cpu_tensor = torch.from_numpy(stack)
    rows.append(("29 bone masks, torch CPU tensor", t_ref29,
                 median_ms(lambda: encode_rle_batch(cpu_tensor), max(3, r // 5)), "encode_rle_batch"))
    if torch.cuda.is_available():
        gpu = cpu_tensor.cuda()
        sync = torch.cuda.synchronize
        t_copy_ref = median_ms(lambda: [reference_rle(m) for m in gpu.cpu().numpy()], max(3, r // 5), sync)
        t_gpu = median_ms(lambda: encode_rle_batch(gpu), r, sync)
        rows.append(("29 bone masks, CUDA tensor", t_ref29, t_gpu, "encode_rle_batch"))
        rows.append(("  (reference incl. GPU->host copy)", t_copy_ref, t_gpu, "encode_rle_batch"))

    width = max(len(row[0]) for row in rows)
    print(f"\n{'case':<{width}}  {'reference ms':>12}  {'new ms':>8}  {'speed-up':>8}  new")
    for name, ref, new, how in rows:
        ref_s = f"{ref:12.2f}" if ref is not None else " " * 12
        ratio = f"{ref / new:7.1f}x" if ref is not None else " " * 8
        print(f"{name:<{width}}  {ref_s}  {new:8.2f}  {ratio}  {how or ''}")
    print(f"\nmedians of {r} runs (noisy: {rn}, 29-class rows: {max(3, r // 5)})")


if __name__ == "__main__":
    main()
