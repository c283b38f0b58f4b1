"""utils.rle: byte-identity with the competition's reference encoder, round trips, errors."""
import cv2
import numpy as np
import pytest
import torch

from utils import rle as rle_mod
from utils.rle import decode_rle, encode_rle, encode_rle_batch, parse_rle, runs_to_rle


def reference_rle(mask):
    """The competition's straightforward encoder, verbatim: the ground truth for the tests."""
    pixels = np.asarray(mask).flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def bone_mask(height, width, seed=0):
    """A filled, rotated ellipse: the shape class of a hand-bone prediction."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), np.uint8)
    center = (int(rng.integers(width // 4, 3 * width // 4)), int(rng.integers(height // 4, 3 * height // 4)))
    axes = (max(1, width // 12), max(1, height // 3))
    points = cv2.ellipse2Poly(center, axes, int(rng.integers(0, 180)), 0, 360, 2)
    cv2.fillPoly(mask, [points], 1)
    return mask.astype(bool)


def check(mask):
    """encode_rle == reference, and decode_rle inverts it."""
    mask = np.asarray(mask)
    text = encode_rle(mask)
    assert text == reference_rle(mask)
    np.testing.assert_array_equal(decode_rle(text, *mask.shape), mask.astype(np.uint8))
    return text


@pytest.mark.parametrize("seed", range(6))
def test_random_masks_match_reference(seed):
    rng = np.random.default_rng(seed)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 50, 2))
        check(rng.random((h, w)) < rng.random())


def test_random_noisy_large_mask_matches_reference():
    # dense changes take the pixel-wise path and the numpy text formatter
    mask = np.random.default_rng(7).random((300, 517)) < 0.5
    check(mask)
    sparse = np.zeros((301, 517), bool)
    sparse[::7, ::5] = True                   # many runs, but few words change: word path
    check(sparse)


@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (17, 1), (8, 8), (9, 7), (1, 64), (64, 1), (3, 3)])
def test_edge_cases(shape):
    n = shape[0] * shape[1]
    assert check(np.zeros(shape, bool)) == ""
    assert check(np.ones(shape, bool)) == f"1 {n}"
    first = np.zeros(n, bool)
    first[0] = True
    assert check(first.reshape(shape)) == "1 1"
    last = np.zeros(n, bool)
    last[-1] = True
    assert check(last.reshape(shape)) == f"{n} 1"
    alternating = (np.arange(n) % 2 == 0).reshape(shape)
    check(alternating)
    check(~alternating)


def test_every_single_pixel_position_in_a_word_boundary_region():
    # a run starting / ending at each offset around 8-pixel word edges and the unaligned tail
    for n in range(1, 30):
        for start in range(n):
            for stop in range(start + 1, min(n, start + 10) + 1):
                flat = np.zeros(n, np.uint8)
                flat[start:stop] = 1
                assert encode_rle(flat.reshape(1, n)) == f"{start + 1} {stop - start}"


@pytest.mark.parametrize("shape,seed", [((2048, 2048), 0), ((512, 384), 1), ((384, 512), 2), ((1000, 777), 3)])
def test_bone_shaped_masks(shape, seed):
    check(bone_mask(*shape, seed=seed))


def test_dtypes_and_tensors():
    mask = bone_mask(256, 192)
    want = reference_rle(mask)
    assert encode_rle(mask.astype(np.uint8)) == want
    assert encode_rle(mask.astype(np.uint8) * 255) == want          # nonzero = foreground
    assert encode_rle(mask.astype(np.float32)) == want
    assert encode_rle(torch.from_numpy(mask)) == want
    assert encode_rle(torch.from_numpy(mask).to(torch.uint8)) == want
    assert encode_rle(torch.from_numpy(mask).float().requires_grad_()) == want
    assert encode_rle(np.asfortranarray(mask)) == want              # row-major regardless of layout
    assert encode_rle(torch.from_numpy(mask.T.copy()).t()) == want  # non-contiguous tensor
    mixed = mask.astype(np.uint8)
    mixed[mask] = np.random.default_rng(0).integers(1, 255, int(mask.sum()), dtype=np.uint8)
    assert encode_rle(mixed) == want


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros((2, 3, 4), bool))


def test_format_ints_matches_str_for_all_digit_counts():
    values = [0, 1, 9, 10, 99, 100, 9999, 10000, 10001, 99999999, 100000000,
              2**31 - 1, 2**31, 10**17, 10**18 - 1, 2**63 - 1]
    for v in values:
        for arr in ([v] * 300, [0, v] * 150, [v, 5] * 150):
            a = np.array(arr, dtype=np.int64)
            assert rle_mod._format_ints(a) == " ".join(map(str, arr)), v
    a = np.random.default_rng(0).integers(0, 5_000_000, 5000)
    assert rle_mod._format_ints(a) == " ".join(map(str, a.tolist()))


def test_batch_equals_per_channel():
    rng = np.random.default_rng(3)
    masks = np.stack([bone_mask(300, 200, seed=s) for s in range(5)]
                     + [np.zeros((300, 200), bool), np.ones((300, 200), bool),
                        rng.random((300, 200)) < 0.3])
    want = [reference_rle(m) for m in masks]
    assert encode_rle_batch(masks) == want
    assert encode_rle_batch(torch.from_numpy(masks)) == want
    assert encode_rle_batch(torch.from_numpy(masks).to(torch.uint8) * 7) == want


def test_device_path_on_cpu_equals_per_channel():
    """The on-device boundary search (used for CUDA tensors), exercised on the CPU device."""
    rng = np.random.default_rng(4)
    masks = np.stack([bone_mask(64, 48, seed=s) for s in range(3)]
                     + [np.zeros((64, 48), bool), np.ones((64, 48), bool),
                        rng.random((64, 48)) < 0.5])
    masks[0, 0, 0] = masks[0, -1, -1] = True        # runs touching both ends of a channel
    for tensor in (torch.from_numpy(masks), torch.from_numpy(masks).to(torch.uint8)):
        got = [rle_mod._runs_text(b) for b in rle_mod._device_boundaries(tensor)]
        assert got == [reference_rle(m) for m in masks]
    assert rle_mod._device_boundaries(torch.zeros((0, 4, 4), dtype=torch.bool)) == []


@pytest.mark.gpu
def test_batch_on_cuda():
    masks = np.stack([bone_mask(512, 512, seed=s) for s in range(4)])
    assert encode_rle_batch(torch.from_numpy(masks).cuda()) == [reference_rle(m) for m in masks]


def test_runs_to_rle_inverts_parse():
    text = reference_rle(bone_mask(128, 96))
    assert runs_to_rle(*parse_rle(text, 128, 96)) == text
    assert runs_to_rle([], []) == ""


def test_decode_accepts_empty_and_whitespace():
    np.testing.assert_array_equal(decode_rle("", 2, 3), np.zeros((2, 3), np.uint8))
    np.testing.assert_array_equal(decode_rle("  2 2\n", 2, 3), [[0, 1, 1], [0, 0, 0]])
    assert decode_rle("1 6", 2, 3).dtype == np.uint8


@pytest.mark.parametrize("text,match", [
    ("1 2 3", "odd number"),
    ("1 x", "'x' is not a non-negative integer"),
    ("1 2.5", "not a non-negative integer"),
    ("1 -2", "not a non-negative integer"),
    ("0 2", "starts at 0"),
    ("1 0", "length 0"),
    ("5 3", "ends past the 2x3 mask"),
    ("7 1", "ends past"),
    ("3 2 4 1", "sorted and non-overlapping"),
    ("4 1 1 1", "sorted and non-overlapping"),
    ("1 99999999999999999999999", "too large"),
    ("1 " + "9" * 5000, "too large"),
    ("9223372036854775807 9223372036854775807", "ends past"),       # would overflow int64
])
def test_decode_errors(text, match):
    with pytest.raises(ValueError, match=match):
        decode_rle(text, 2, 3)


def test_decode_rejects_bad_size():
    with pytest.raises(ValueError, match="positive"):
        decode_rle("1 1", 0, 3)
