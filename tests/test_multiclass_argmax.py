"""argmax_labels (labels computed along the class boundaries only) equals the dense path, mean_full_size then
argmax, pixel for pixel: one member or an ensemble, up- or downsampled, channels-last maps, ties, NaN, and the
rows and columns the trash CSV samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from modes.multiclass import argmax_labels, first_argmax, mean_full_size
from tasks.coco.submission import submission_lines, to_submission_size


def smooth_probs(classes: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Softmax of smooth random logits: large regions with a clear winner, and boundaries between them."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, classes, max(2, h // 4), max(2, w // 4), generator=g) * 6
    return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[0].softmax(0).contiguous()


def dense(parts, size) -> torch.Tensor:
    return mean_full_size(parts, size).argmax(0).to(torch.uint8)


@pytest.mark.parametrize("low, size", [((16, 20), (64, 50)), ((32, 32), (32, 32)), ((40, 30), (17, 23)),
                                       ((9, 13), (300, 211))])
def test_one_member_equals_the_dense_argmax(low, size):
    for seed in range(3):
        parts = [(smooth_probs(11, *low, seed), 1.0)]
        assert torch.equal(argmax_labels(parts, size), dense(parts, size))


def test_random_maps_and_an_ensemble_with_weights():
    noise = torch.rand(5, 12, 12, generator=torch.Generator().manual_seed(1)).softmax(0)  # boundaries everywhere
    assert torch.equal(argmax_labels([(noise, 1.0)], (37, 41)), dense([(noise, 1.0)], (37, 41)))
    parts = [(smooth_probs(11, 16, 16, 4), 0.7), (smooth_probs(11, 24, 20, 5), 1.9), (smooth_probs(11, 8, 8, 6), 0.4)]
    assert torch.equal(argmax_labels(parts, (96, 80)), dense(parts, (96, 80)))


def test_channels_last_maps_and_ties():
    p = smooth_probs(11, 20, 24, 7)
    last = p[None].contiguous(memory_format=torch.channels_last)[0]  # aten's other kernel, other rounding
    assert torch.equal(argmax_labels([(last, 1.0)], (90, 70)), dense([(last, 1.0)], (90, 70)))
    quantized = torch.round(p * 4) / 4  # whole regions tied between classes (the first wins)
    assert torch.equal(argmax_labels([(quantized, 1.0)], (90, 70)), dense([(quantized, 1.0)], (90, 70)))
    uniform = torch.full((4, 6, 6), 0.25)
    assert int(argmax_labels([(uniform, 1.0)], (20, 20)).max()) == 0


def test_nan_and_first_argmax():
    p = smooth_probs(5, 12, 12, 8)
    p[2, 5, 5] = float("nan")
    assert torch.equal(argmax_labels([(p, 1.0)], (40, 40)), dense([(p, 1.0)], (40, 40)))
    values = torch.tensor([[1.0, 2.0, 3.0, 0.0], [1.0, 5.0, 3.0, 0.0], [0.5, 5.0, 4.0, 0.0]])
    assert first_argmax(values).tolist() == values.argmax(0).tolist() == [0, 1, 2, 0]


def test_the_rows_and_columns_the_csv_samples():
    """The trash CSV reads 256x256 pixels of the full-size labels by OpenCV's nearest resize: computing those
    pixels only gives the same rows."""
    for size in ((300, 211), (256, 256), (120, 500)):
        parts = [(smooth_probs(11, 32, 32, sum(size)), 1.0)]
        rows, cols = submission_lines(size[0]), submission_lines(size[1])
        sampled = argmax_labels(parts, size, rows, cols).numpy()
        assert np.array_equal(sampled, to_submission_size(dense(parts, size).numpy()))
