"""Tests for transforms/: the albumentations (CPU) builder, the Sobel op, and the kornia (GPU-path) augment.

Everything runs on the CPU device; the GPU path is device-agnostic torch code.
"""

from __future__ import annotations

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from transforms.cpu import apply_cpu_transforms, build_cpu_transforms
from transforms.gpu import GpuAugment, build_gpu_transforms
from transforms.sobel import Sobel, sobel_magnitude
from utils.errors import ConfigError

H, W, C = 64, 80, 29


def _image(h: int = H, w: int = W) -> np.ndarray:
    """A smooth uint8 test image (a ramp plus waves) with no symmetry, so flips/rotations are visible."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 30 + 170 * xx / w + 40 * np.sin(yy / 5.0) + 15 * np.cos((xx + 2 * yy) / 9.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(h: int = H, w: int = W, c: int = C, seed: int = 0) -> np.ndarray:
    """(h, w, c) 0/1 mask of random rectangles; classes 0 and 1 overlap on purpose (multi-label)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((h, w, c), np.uint8)
    m[10:40, 15:50, 0] = 1
    m[25:55, 35:70, 1] = 1  # overlaps class 0 on [25:40, 35:50]
    for k in range(2, c):
        y0, x0 = rng.integers(0, h - 12), rng.integers(0, w - 12)
        m[y0 : y0 + rng.integers(4, 12), x0 : x0 + rng.integers(4, 12), k] = 1
    return m


def _to_torch(img: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(img)[None, None].float() / 255.0, torch.from_numpy(mask).permute(2, 0, 1)[None].contiguous()


def _to_numpy(img: torch.Tensor, mask: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return img[0, 0].numpy() * 255.0, mask[0].permute(1, 2, 0).numpy()


# ============================================================================ CPU builder
PUBLISHED = [
    {"name": "Resize", "height": 32, "width": 48, "p": 1.0},
    {"name": "HorizontalFlip", "p": 1.0},
    {"name": "Rotate", "limit": 10, "p": 1.0},
    {"name": "CLAHE", "clip_limit": 2.0, "p": 1.0},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 1.0},
    {"name": "GridDistortion", "p": 1.0},
    {"name": "ElasticTransform", "p": 1.0},
    {"name": "Emboss", "p": 1.0},
    {"name": "Sobel", "p": 1.0},
    {"name": "Normalize", "mean": 0.5, "std": 0.25, "p": 1.0},
]


@pytest.mark.parametrize("spec", PUBLISHED, ids=[s["name"] for s in PUBLISHED])
def test_cpu_published_transform_builds_and_keeps_layout(spec):
    compose = build_cpu_transforms([dict(spec)], "transforms.train")
    assert isinstance(compose, A.Compose)
    img, mask = _image(), _mask()
    out_img, out_mask = apply_cpu_transforms(compose, img, mask)
    h, w = (32, 48) if spec["name"] == "Resize" else (H, W)
    assert out_img.shape == (h, w)
    assert out_mask.shape == (h, w, C)
    assert out_mask.dtype == np.uint8
    assert set(np.unique(out_mask)) <= {0, 1}
    assert out_img.dtype == (np.float32 if spec["name"] == "Normalize" else np.uint8)


def test_cpu_full_published_pipeline():
    compose = build_cpu_transforms([dict(s) for s in PUBLISHED if s["name"] != "Resize"], "transforms.train")
    out_img, out_mask = apply_cpu_transforms(compose, _image(), _mask())
    assert out_img.shape == (H, W) and out_img.dtype == np.float32
    assert out_mask.shape == (H, W, C) and set(np.unique(out_mask)) <= {0, 1}


def test_cpu_apply_squeezes_grayscale_channel_and_none_is_identity():
    img, mask = _image(), _mask()
    assert apply_cpu_transforms(None, img, mask) == (img, mask)
    # an (H, W, 1) image input (or output) comes back as (H, W)
    out_img, out_mask = apply_cpu_transforms(build_cpu_transforms([{"name": "HorizontalFlip", "p": 1.0}], "k"), img[..., None], mask)
    assert out_img.shape == (H, W)
    np.testing.assert_array_equal(out_img, img[:, ::-1])
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])


def test_cpu_empty_is_none():
    assert build_cpu_transforms([], "transforms.train") is None
    assert build_cpu_transforms(None, "transforms.train") is None


def _one_line_config_error(fn, *args) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_cpu_unknown_name_suggests_closest():
    specs = [{"name": "HorizontalFlip"}, {"name": "HorizontalFlip"}, {"name": "Rotat", "limit": 10}]
    msg = _one_line_config_error(build_cpu_transforms, specs, "transforms.train")
    assert msg == "transforms.train[2]: unknown transform 'Rotat' (did you mean 'Rotate'?)"
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "sobel"}], "transforms.train")
    assert msg.startswith("transforms.train[0]: unknown transform 'sobel'") and "'Sobel'" in msg


def test_cpu_bad_params_are_one_line_errors():
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "Rotate", "p": 3}], "transforms.train")
    assert msg.startswith("transforms.train[0]: invalid parameters for Rotate:") and "p" in msg
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "Rotate", "limit": "x"}], "transforms.val")
    assert msg.startswith("transforms.val[0]:") and "limit" in msg
    # albumentations 2 only warns about unknown arguments; the builder makes them errors
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "Rotate", "limt": 10}], "transforms.train")
    assert msg.startswith("transforms.train[0]:") and "'limt'" in msg
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "Sobel", "ksize": 4}], "transforms.train")
    assert msg.startswith("transforms.train[0]:") and "ksize" in msg
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "Sobel", "sigma": 1}], "transforms.train")
    assert msg.startswith("transforms.train[0]:") and "sigma" in msg
    msg = _one_line_config_error(build_cpu_transforms, [{"p": 1.0}], "transforms.train")
    assert msg == "transforms.train[0]: missing 'name'"
    msg = _one_line_config_error(build_cpu_transforms, {"name": "Rotate"}, "transforms.train")
    assert msg.startswith("transforms.train: expected a list")


def test_cpu_excluded_base_classes_are_unknown():
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "DualTransform"}], "transforms.train")
    assert msg == "transforms.train[0]: transform 'DualTransform' is an abstract base class"
    msg = _one_line_config_error(build_cpu_transforms, [{"name": "ToTensorV2"}], "transforms.train")
    assert msg.startswith("transforms.train[0]: transform 'ToTensorV2' is not allowed")


# ============================================================================ Sobel
def test_sobel_shape_dtype_and_edge():
    img = np.zeros((32, 40), np.uint8)
    img[:, 20:] = 200  # one vertical step edge between columns 19 and 20
    out = Sobel(p=1.0)(image=img)["image"]
    assert out.shape == img.shape and out.dtype == np.uint8
    # a full step gives the step height; flat regions give 0
    assert out[:, 19:21].min() == 200
    assert out[:, :18].max() == 0 and out[:, 22:].max() == 0
    # (H, W, 1) keeps its shape; float keeps its dtype and scale
    assert sobel_magnitude(img[..., None]).shape == (32, 40, 1)
    f = sobel_magnitude(img.astype(np.float32) / 255.0)
    assert f.dtype == np.float32 and f.max() == pytest.approx(200 / 255.0, rel=1e-5)
    # a full-contrast diagonal edge exceeds 255 (x sqrt 2 before smoothing): uint8 output is clipped, not wrapped
    diagonal = ((np.indices((32, 40)).sum(0) > 35) * 255).astype(np.uint8)
    assert sobel_magnitude(diagonal.astype(np.float32)).max() > 255
    assert sobel_magnitude(diagonal).max() == 255
    # ksize 5 is rescaled to the same range
    assert sobel_magnitude(img, ksize=5)[:, 19:21].min() >= 199


def test_sobel_leaves_mask_alone_and_p_zero_is_identity():
    img, mask = _image(), _mask()
    compose = build_cpu_transforms([{"name": "Sobel", "p": 1.0}], "k")
    out_img, out_mask = apply_cpu_transforms(compose, img, mask)
    np.testing.assert_array_equal(out_mask, mask)
    assert not np.array_equal(out_img, img)
    out_img, _ = apply_cpu_transforms(build_cpu_transforms([{"name": "Sobel", "p": 0.0}], "k"), img, mask)
    np.testing.assert_array_equal(out_img, img)


# ============================================================================ GPU builder and errors
def test_gpu_empty_is_none_and_errors_are_one_line():
    assert build_gpu_transforms([], "gpu_transforms.train") is None
    msg = _one_line_config_error(build_gpu_transforms, [{"name": "Rotat"}], "gpu_transforms.train")
    assert msg == "gpu_transforms.train[0]: unknown transform 'Rotat' (did you mean 'Rotate'?)"
    msg = _one_line_config_error(build_gpu_transforms, [{"name": "Emboss"}], "gpu_transforms.train")
    assert msg.startswith("gpu_transforms.train[0]: unknown transform 'Emboss' (available: Affine, CLAHE,")
    msg = _one_line_config_error(build_gpu_transforms, [{"name": "Rotate", "limt": 3}], "gpu_transforms.train")
    assert msg.startswith("gpu_transforms.train[0]: unknown parameter(s) 'limt' for Rotate")
    for bad in (
        {"name": "HorizontalFlip", "p": 2},
        {"name": "Rotate", "limit": [10, 1]},
        {"name": "Affine", "scale": 0},
        {"name": "Affine", "translate": 2},
        {"name": "RandomGamma", "gamma_limit": [0, 120]},  # albumentations: bounds >= 1
        {"name": "CLAHE", "tile_grid_size": 8},
        {"name": "RandomBrightnessContrast", "brightness_limit": "a"},
    ):
        msg = _one_line_config_error(build_gpu_transforms, [{"name": "VerticalFlip"}, bad], "gpu_transforms.train")
        assert msg.startswith(f"gpu_transforms.train[1]: invalid parameters for {bad['name']}:"), msg


# ============================================================================ GPU vs CPU agreement
def test_gpu_horizontal_flip_equals_albumentations_exactly():
    img, mask = _image(), _mask()
    cpu_img, cpu_mask = apply_cpu_transforms(A.Compose([A.HorizontalFlip(p=1.0)]), img, mask)
    gpu = build_gpu_transforms([{"name": "HorizontalFlip", "p": 1.0}], "k")
    g_img, g_mask = _to_numpy(*gpu(*_to_torch(img, mask)))
    np.testing.assert_array_equal(np.rint(g_img).astype(np.uint8), cpu_img)
    np.testing.assert_array_equal(g_mask, cpu_mask)


@pytest.mark.parametrize("angle", [10, -10, 30])
@pytest.mark.parametrize("name", ["Rotate", "Affine"])
def test_gpu_rotation_matches_albumentations(name, angle):
    """Same fixed angle on both paths; positive = counter-clockwise in both (a wrong sign gives ~40/255 error).

    Tolerance: both paths interpolate bilinearly about the same centre ((W-1)/2, (H-1)/2), so they differ only
    by albumentations rounding to uint8 (<= 0.5/255) plus float error; 2/255 leaves margin for
    OpenCV's fixed-point bilinear weights. Masks: both use nearest; ties at exact pixel boundaries can round
    differently, hence >= 99% instead of exact (measured: 100%).
    """
    img, mask = _image(), _mask()
    cpu = A.Compose([A.Rotate(limit=(angle, angle), border_mode=cv2.BORDER_CONSTANT, p=1.0)])
    cpu_img, cpu_mask = apply_cpu_transforms(cpu, img, mask)
    spec = {"name": "Rotate", "limit": [angle, angle]} if name == "Rotate" else {"name": "Affine", "degrees": [angle, angle]}
    gpu = build_gpu_transforms([{**spec, "p": 1.0}], "k")
    g_img, g_mask = _to_numpy(*gpu(*_to_torch(img, mask)))
    diff = np.abs(g_img - cpu_img.astype(np.float32))
    assert diff[4:-4, 4:-4].mean() < 2.0, diff.mean()  # interior, in 0..255 units
    assert diff.mean() < 2.0
    assert (g_mask == cpu_mask).mean() >= 0.99
    assert g_mask.dtype == np.uint8 and set(np.unique(g_mask)) <= {0, 1}
    # the opposite direction is clearly different: the comparison above can detect a sign error
    cpu_opp, _ = apply_cpu_transforms(A.Compose([A.Rotate(limit=(-angle, -angle), p=1.0)]), img, mask)
    assert np.abs(g_img - cpu_opp.astype(np.float32)).mean() > 5.0


def test_gpu_affine_scale_matches_albumentations():
    img, mask = _image(), _mask()
    cpu_img, cpu_mask = apply_cpu_transforms(A.Compose([A.Affine(scale=1.2, p=1.0)]), img, mask)
    gpu = build_gpu_transforms([{"name": "Affine", "scale": 1.2, "p": 1.0}], "k")
    g_img, g_mask = _to_numpy(*gpu(*_to_torch(img, mask)))
    assert np.abs(g_img - cpu_img.astype(np.float32)).mean() < 2.0
    assert (g_mask == cpu_mask).mean() >= 0.99


# ============================================================================ masks stay binary and multi-label
def _batch(b: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, masks = zip(*(_to_torch(_image(), _mask(seed=seed + i)) for i in range(b)))
    return torch.cat(imgs), torch.cat(masks)


def test_gpu_geometric_ops_keep_masks_binary_and_multilabel():
    torch.manual_seed(0)
    image, mask = _batch()
    overlap = (mask[:, 0] * mask[:, 1]).sum().item()
    assert overlap > 0
    specs = [
        {"name": "HorizontalFlip", "p": 0.5},
        {"name": "VerticalFlip", "p": 0.5},
        {"name": "Rotate", "limit": 20, "p": 1.0},
        {"name": "Affine", "degrees": 10, "translate": 0.05, "scale": [0.9, 1.1], "p": 1.0},
    ]
    out_img, out_mask = build_gpu_transforms(specs, "k")(image, mask)
    assert out_img.shape == image.shape and out_img.dtype == torch.float32
    assert out_mask.shape == mask.shape and out_mask.dtype == torch.uint8
    assert set(out_mask.unique().tolist()) <= {0, 1}
    # overlap pixels keep both classes: nearest resampling moves whole label vectors, never mixes them
    out_overlap = (out_mask[:, 0] * out_mask[:, 1]).sum().item()
    assert 0.8 * overlap <= out_overlap <= 1.2 * overlap
    # every output pixel's label vector exists in the input (per sample), i.e. no new label combinations
    for i in range(mask.shape[0]):
        before = set(map(tuple, mask[i].flatten(1).T.tolist()))
        after = set(map(tuple, out_mask[i].flatten(1).T.tolist()))
        assert after <= before | {(0,) * C}


def test_gpu_flip_preserves_overlap_exactly_and_pairs_image_with_mask():
    torch.manual_seed(1)
    image, mask = _batch(8)
    out_img, out_mask = build_gpu_transforms([{"name": "HorizontalFlip", "p": 0.5}], "k")(image, mask.float())
    assert out_mask.dtype == torch.float32
    flipped = [not torch.equal(out_img[i], image[i]) for i in range(8)]
    assert 0 < sum(flipped) < 8  # random per sample
    for i in range(8):
        exp_img, exp_mask = (image[i].flip(-1), mask[i].flip(-1)) if flipped[i] else (image[i], mask[i])
        assert torch.equal(out_img[i], exp_img)
        assert torch.equal(out_mask[i], exp_mask.float())  # same decision for image and mask
    assert torch.equal((out_mask[:, 0] * out_mask[:, 1]).sum(), (mask[:, 0] * mask[:, 1]).sum().float())


def test_gpu_rotation_is_random_per_sample_and_same_for_image_and_mask():
    torch.manual_seed(2)
    image, mask = _batch(4)
    mask[:] = mask[0]  # identical masks: only the per-sample angle can make outputs differ
    image[:] = image[0]
    out_img, out_mask = build_gpu_transforms([{"name": "Rotate", "limit": 30, "p": 1.0}], "k")(image, mask)
    assert not torch.equal(out_mask[0], out_mask[1])
    # image and mask moved together: the mask of sample i matches a rotation of image i, not of image j
    for i in range(4):
        ref_img, ref_mask = out_img[i], out_mask[i]
        assert all(torch.equal(ref_img, out_img[j]) == torch.equal(ref_mask, out_mask[j]) for j in range(4))


def test_gpu_bfloat16_and_dtypes():
    torch.manual_seed(3)
    image, mask = _batch(2)
    specs = [{"name": "Rotate", "limit": 10, "p": 1.0}, {"name": "RandomBrightnessContrast", "p": 1.0}]
    out_img, out_mask = build_gpu_transforms(specs, "k")(image.bfloat16(), mask)
    assert out_img.dtype == torch.bfloat16 and out_mask.dtype == torch.uint8
    assert torch.isfinite(out_img.float()).all()
    with pytest.raises(ValueError):
        build_gpu_transforms(specs, "k")(image[0], mask)


# ============================================================================ intensity ops
INTENSITY = [
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.5, "contrast_limit": 0.5, "p": 1.0},
    {"name": "RandomGamma", "gamma_limit": [80, 200], "p": 1.0},
    {"name": "CLAHE", "clip_limit": 4.0, "tile_grid_size": [4, 4], "p": 1.0},
]


@pytest.mark.parametrize("spec", INTENSITY, ids=[s["name"] for s in INTENSITY])
def test_gpu_intensity_ops_leave_mask_alone_and_stay_in_unit_range(spec):
    torch.manual_seed(4)
    image, mask = _batch(4)
    out_img, out_mask = build_gpu_transforms([dict(spec)], "k")(image, mask)
    assert torch.equal(out_mask, mask)
    assert out_img.shape == image.shape
    assert out_img.min() >= 0.0 and out_img.max() <= 1.0
    assert not torch.allclose(out_img, image)
    # p=0 is the identity
    same_img, _ = build_gpu_transforms([{**spec, "p": 0.0}], "k")(image, mask)
    assert torch.equal(same_img, image)


def test_gpu_brightness_contrast_semantics():
    """albumentations semantics: out = img * (1 + c) + b with c ~ U(-cl, cl), b ~ U(-bl, bl)."""
    image = torch.full((64, 1, 8, 8), 0.5)
    mask = torch.zeros(64, 2, 8, 8)
    torch.manual_seed(5)
    out, _ = build_gpu_transforms([{"name": "RandomBrightnessContrast", "brightness_limit": 0.1, "contrast_limit": 0.0, "p": 1.0}], "k")(image, mask)
    shift = out[:, 0, 0, 0] - 0.5
    assert shift.abs().max() <= 0.1 + 1e-6 and shift.std() > 0.02
    assert torch.equal(out, out[:, :, :1, :1].expand_as(out))  # one factor per sample, additive
    out, _ = build_gpu_transforms([{"name": "RandomBrightnessContrast", "brightness_limit": 0.0, "contrast_limit": 0.2, "p": 1.0}], "k")(image, mask)
    factor = out[:, 0, 0, 0] / 0.5
    assert factor.min() >= 0.8 - 1e-6 and factor.max() <= 1.2 + 1e-6 and factor.std() > 0.05


def test_gpu_gamma_semantics():
    """albumentations semantics: gamma = U(gamma_limit) / 100, out = img ** gamma."""
    image = torch.full((4, 1, 4, 4), 0.5)
    out, _ = build_gpu_transforms([{"name": "RandomGamma", "gamma_limit": [200, 200], "p": 1.0}], "k")(image, torch.zeros(4, 1, 4, 4))
    torch.testing.assert_close(out, torch.full_like(image, 0.25))


def test_gpu_clahe_close_to_opencv():
    """kornia's CLAHE is not bit-exact with OpenCV (its tile interpolation phase differs by half a step)."""
    img = _image(128, 128)
    ref = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(img).astype(np.float32)
    out, _ = build_gpu_transforms([{"name": "CLAHE", "clip_limit": [2.0, 2.0], "tile_grid_size": [4, 4], "p": 1.0}], "k")(
        *_to_torch(img, np.zeros((128, 128, 1), np.uint8))
    )
    diff = np.abs(out[0, 0].numpy() * 255.0 - ref)
    assert diff.mean() < 4.0, diff.mean()


def test_gpu_augment_is_plain_callable_and_repr():
    aug = build_gpu_transforms([{"name": "HorizontalFlip"}, {"name": "CLAHE"}], "k")
    assert isinstance(aug, GpuAugment) and len(aug.ops) == 2
    assert "RandomHorizontalFlip" in repr(aug) and "RandomClahe" in repr(aug)
