"""trainer/fullsize.py: full-size values, masks, RLE, Dice, threshold histograms and confidences from per-class
boxes, against the old path (trainer.predictor.to_full_size of the whole map), which stays the reference here."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.dataset import unpack_mask_bits
from modes.dice import dice_per_class
from modes.fullsize import FullSizeProbs, bin_counts, dice_counts, upsample_box, uses_channels_last_kernel, value_bins
from tasks.handbone.pseudo import confidence
from tasks.handbone.reader import scan_split
from tasks.handbone.submission import read_submission
from trainer.inference import load_member, load_probs_member, member_config, write_submission
from trainer.predictor import to_full_size
from trainer.runtime import setup_runtime
from trainer.thresholds import per_threshold_dice, per_threshold_dice_boxes
from utils.images import read_gray, resize_image
from utils.rle import encode_rle, encode_rle_batch, encode_rle_crop

SIZES = [((16, 16), (64, 64)), ((13, 9), (101, 57)), ((32, 24), (32, 77)), ((40, 30), (17, 23)), ((8, 8), (8, 8)),
         ((24, 20), (1000, 777))]


def bony_probs(c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Probabilities like a model's: mostly confident background, one blob per class, some at the borders, one
    all-positive and one all-negative class, and a few values exactly on 0.5."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.full((c, h, w), -9.0) + torch.randn(c, h, w, generator=g)
    for k in range(2, c):
        y, x = torch.randint(-2, h, (1,), generator=g).item(), torch.randint(-2, w, (1,), generator=g).item()
        logits[k, max(y, 0):y + 4, max(x, 0):x + 5] = 4 * torch.randn(1, generator=g).abs() + 1
    logits[0] = 9.0        # all positive
    logits[1] = -30.0      # all negative
    probs = logits.sigmoid()
    probs[3, :2, :2] = 0.5
    return probs


def reference_masks(parts, size, thresholds):
    """The old path: each member upsampled in full, weighted, summed, divided, thresholded."""
    mean = None
    for p, w in parts:
        v = to_full_size(p, size).mul(w)
        mean = v if mean is None else mean.add_(v)
    mean = mean.div_(sum(w for _, w in parts))
    return mean > thresholds


@pytest.mark.parametrize("low,size", SIZES)
def test_values_are_those_of_f_interpolate(low, size):
    p = torch.rand(5, *low, generator=torch.Generator().manual_seed(1))
    reference = F.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0]
    assert torch.equal(FullSizeProbs([(p, 1.0)], size).full(), reference)  # bit for bit, every pixel
    box = (size[0] // 3, size[0] - 1 if size[0] > 1 else 1, 1, max(2, size[1] // 2))
    crop = upsample_box(p, size, box, 2, uses_channels_last_kernel(p, size))
    assert torch.equal(crop, reference[2, box[0]:box[1], box[2]:box[3]])


@pytest.mark.parametrize("low,size", SIZES)
def test_masks_and_rle_equal_the_full_size_path(low, size):
    probs = bony_probs(7, *low, seed=sum(size))
    thresholds = torch.tensor([0.5, 0.5, 0.3, 0.5, 0.7, 0.05, 0.95])
    full = FullSizeProbs([(probs, 1.0)], size)
    expected = reference_masks([(probs, 1.0)], size, thresholds.view(-1, 1, 1))
    masks = full.masks(thresholds)
    texts = ["" if m is None else encode_rle_crop(m[1].numpy(), m[0][0], m[0][2], size[1]) for m in masks]
    assert texts == encode_rle_batch(expected)
    assert masks[1] is None and masks[0][0] == (0, size[0], 0, size[1])  # all negative: no box; all positive: all
    for k, m in enumerate(masks):  # nothing positive outside the box
        if m is not None:
            (r0, r1, c0, c1), crop = m
            assert int(crop.sum()) == int(expected[k].sum())
            assert torch.equal(crop, expected[k, r0:r1, c0:c1])


def test_hot_cells_that_downsampling_skips():
    """40 -> 7 rows reads only some model-resolution rows: a hot cell on a skipped row gives no box, no error."""
    probs = torch.zeros(2, 40, 40)
    probs[0, 1, 1] = 1.0  # row and column 1 are read by no output pixel
    probs[1, 20, 20] = 1.0
    expected = reference_masks([(probs, 1.0)], (7, 7), 0.5)
    masks = FullSizeProbs([(probs, 1.0)], (7, 7)).masks(0.5)
    assert masks[0] is None and not expected[0].any()
    assert ["" if m is None else encode_rle_crop(m[1].numpy(), m[0][0], m[0][2], 7) for m in masks] == \
        encode_rle_batch(expected)


def test_encode_rle_crop_equals_encode_rle_of_the_full_mask():
    rng = np.random.default_rng(0)
    for _ in range(500):
        height, width = rng.integers(1, 20, 2)
        r0, c0 = rng.integers(0, height), rng.integers(0, width)
        r1, c1 = rng.integers(r0 + 1, height + 1), rng.integers(c0 + 1, width + 1)
        crop = rng.random((r1 - r0, c1 - c0)) < rng.random()
        full = np.zeros((height, width), bool)
        full[r0:r1, c0:c1] = crop
        assert encode_rle_crop(crop, r0, c0, width) == encode_rle(full)
    with pytest.raises(ValueError, match="does not fit"):
        encode_rle_crop(np.ones((2, 3), bool), 0, 2, 4)


def test_ensemble_members_at_different_sizes_with_weights():
    size = (211, 173)
    parts = [(bony_probs(6, 24, 20, seed=1), 2.0), (bony_probs(6, 32, 32, seed=2), 1.0), (bony_probs(6, 16, 16, 3), 0.5)]
    expected = reference_masks(parts, size, 0.4)
    masks = FullSizeProbs(parts, size).masks(0.4)
    texts = ["" if m is None else encode_rle_crop(m[1].numpy(), m[0][0], m[0][2], size[1]) for m in masks]
    assert texts == encode_rle_batch(expected)


def test_channels_last_maps_are_exact_too():
    """aten interpolates a channels-last map (a channels_last model's output) with another kernel, mirrored too;
    should a CPU's SIMD width not be found, a mask pixel could only differ within an ulp of the threshold."""
    probs = torch.rand(1, 29, 64, 64, generator=torch.Generator().manual_seed(5))
    cl = probs.contiguous(memory_format=torch.channels_last)[0]
    size = (1024, 1024)
    old = to_full_size(cl, size) > 0.5
    new = FullSizeProbs([(cl, 1.0)], size).masks(0.5)
    differ = sum(int((old[k, b[0]:b[1], b[2]:b[3]] != m).sum()) for k, (b, m) in enumerate(new))
    assert differ <= 1e-6 * old.numel()
    reference = F.interpolate(cl[None], size=(300, 200), mode="bilinear", align_corners=False)[0]
    assert torch.equal(FullSizeProbs([(cl, 1.0)], (300, 200)).full(), reference)


def test_dice_and_threshold_histograms_from_boxes():
    size = (97, 130)
    probs = bony_probs(5, 20, 26, seed=4)
    full_map = to_full_size(probs, size)
    truth = full_map.roll(3, 1) > 0.3  # overlapping, not equal
    bits = np.packbits(truth.numpy(), axis=2)
    assert torch.equal(unpack_mask_bits(torch.from_numpy(bits), size[1]).bool(), truth)
    full = FullSizeProbs([(probs, 1.0)], size)
    inter, area, truth_area = dice_counts(full, 0.5, bits)
    dice = (2 * inter + 1e-4) / (area + truth_area + 1e-4)
    assert torch.equal(dice, dice_per_class(full_map > 0.5, truth))
    boxes = per_threshold_dice_boxes(full, bits)
    assert torch.equal(boxes[:, 1:], per_threshold_dice(full_map, truth)[:, 1:])


@pytest.mark.parametrize("low,size", [((16, 16), (256, 256)), ((13, 9), (101, 57)), ((20, 16), (700, 579)),
                                      ((37, 29), (403, 301))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bin_counts_by_quads_equal_every_pixels_bins(low, size, channels_last):
    """Quads whose cells lie in one bin are counted without their pixels; the counts equal those of every pixel
    of the full-size map (both of aten's kernels, integer and fractional scales, values exactly on bin edges)."""
    g = torch.Generator().manual_seed(size[0])
    probs = F.interpolate(torch.randn(1, 7, 4, 4, generator=g) * 6, size=low, mode="bilinear")[0].sigmoid()
    probs[0], probs[1, :3] = 0.5, 0.25  # on bin edges
    probs[2], probs[3] = 1.0, 0.0
    if channels_last:
        probs = probs[None].contiguous(memory_format=torch.channels_last)[0]
    full_map = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)[0]
    truth = full_map.roll(3, 1) > 0.4
    full = FullSizeProbs([(probs, 1.0)], size)
    assert full.kernels == [uses_channels_last_kernel(probs, size)]
    counts = bin_counts(full, np.packbits(truth.numpy(), axis=2), 100)
    bins = value_bins(full_map, 100)
    for c in range(7):
        expected_all = torch.bincount(bins[c].flatten() + 1, minlength=101)[1:]
        expected_true = torch.bincount(bins[c][truth[c]] + 1, minlength=101)[1:]
        expected_all[0] = expected_true[0] = 0  # bin 0 is not counted
        assert torch.equal(counts[0][c], expected_all) and torch.equal(counts[1][c], expected_true)
    assert counts[0][2, 99] == size[0] * size[1] and counts[0][3].sum() == 0


def test_threshold_histograms_of_an_ensemble_from_boxes():
    """Several members (or no upsampling) fall back to binning the boxes' values: the same Dice."""
    size = (90, 70)
    parts = [(bony_probs(5, 20, 16, seed=1), 1.0), (bony_probs(5, 30, 35, seed=2), 2.0)]
    full = FullSizeProbs(parts, size)
    assert bin_counts(full, np.zeros((5, 90, 9), np.uint8), 100) is None
    full_map = full.full()
    truth = full_map.roll(2, 2) > 0.3
    table = per_threshold_dice_boxes(full, np.packbits(truth.numpy(), axis=2))
    assert torch.equal(table[:, 1:], per_threshold_dice(full_map, truth)[:, 1:])


def test_confidence_without_the_full_map():
    size = (150, 120)
    parts = [(bony_probs(4, 15, 12, seed=6), 1.0), (bony_probs(4, 30, 30, seed=7), 3.0)]
    full = FullSizeProbs(parts, size)
    assert full.confidence() == pytest.approx(confidence(full.full()), abs=1e-7)
    unsure = torch.full((3, 8, 8), 0.5)
    assert FullSizeProbs([(unsure, 1.0)], (20, 20)).confidence() == pytest.approx(0.5)


def test_submission_of_an_ensemble_equals_the_full_size_path(tiny_checkpoint, dataset_root, tmp_path):
    """inference/ensemble: members at two input sizes with weights, flip TTA, sliding window and saved maps, per-class
    thresholds: the CSV's masks are the old full-size path's, bit for bit."""
    runtime = setup_runtime(member_config(tiny_checkpoint).trainer)
    a = load_member(tiny_checkpoint, member_config(tiny_checkpoint, tta="hflip"), runtime, weight=2.0)
    cfg_b = member_config(tiny_checkpoint, overrides=["data.image_size=48", "predict.mode=sliding",
                                                      "predict.window=32"])
    b = load_member(tiny_checkpoint, cfg_b, runtime, weight=1.0)
    write_submission([b], b.task, dataset_root, tmp_path / "b.csv", runtime, torch.full((29,), 0.5),
                     save_probs=tmp_path / "probs", num_workers=0, progress=False)
    saved = load_probs_member(tmp_path / "probs", weight=0.5)
    samples = scan_split(dataset_root, "test")
    low = {}
    for s in samples:
        image = read_gray(s.image)
        low[s.key] = (image.shape, [m.predictor(torch.from_numpy(resize_image(image, m.image_size))[None, None])[0]
                                    for m in (a, b)])
    # thresholds near each class's 97th percentile, so that the barely trained model gives non-empty masks
    stacked = torch.stack([to_full_size(ps[0], shape) for shape, ps in low.values()])
    thresholds = torch.quantile(stacked.transpose(0, 1).flatten(1)[:, ::7], 0.97, dim=1)
    write_submission([a, b, saved], a.task, dataset_root, tmp_path / "sub.csv", runtime, thresholds, num_workers=0,
                     progress=False)
    rows = read_submission(tmp_path / "sub.csv", a.cfg.task.classes)
    positive = 0
    for s in samples:
        shape, (pa, pb) = low[s.key]
        masks = reference_masks([(pa, 2.0), (pb, 1.0), (saved.load(s.key), 0.5)], shape, thresholds.view(-1, 1, 1))
        positive += int(masks.sum())
        assert rows[s.key.split("/")[-1]] == encode_rle_batch(masks)
    assert positive > 0
