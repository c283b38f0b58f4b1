"""GPU-side augmentation: applied by the trainer to whole batches already on the device.

Image batch: float (B, 1, H, W) in [0, 1], or (B, 3, H, W) for RGB photographs; mask batch: float or uint8
(B, C, H, W) with 0/1 values (multi-label: a pixel may belong to several classes), or a multiclass label map as
one (B, 1, H, W) plane of class indices (nearest resampling keeps them whole). Every op draws its random
parameters per sample.

- Geometric ops (flips, rotation, affine) run through ``kornia.augmentation.AugmentationSequential``
  with data_keys ["input", "mask"]: the mask gets the *same* parameters as the image and is resampled
  with nearest interpolation (kornia's default for masks), so it stays exactly 0/1 and each pixel keeps
  all of its classes. Out-of-image areas are filled with zeros for both image and mask, which matches
  albumentations 2's default (``border_mode=cv2.BORDER_CONSTANT``, fill 0, fill_mask 0).
- Intensity ops (brightness/contrast, gamma, CLAHE) touch the image only and clamp it to [0, 1]; they
  assume [0, 1] images, so do not combine them with a CPU-side Normalize.

Parameter names and defaults follow albumentations where an op of the same name exists there.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import kornia.augmentation as K
import torch
from kornia.color import lab_to_rgb, rgb_to_lab

from transforms.cpu import check_spec_list, one_line_error, split_spec
from utils.errors import ConfigError

Op = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------- parameter helpers
def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _prob(p: Any) -> float:
    p = _number(p, "p")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return p


def _range(value: Any, what: str, symmetric: bool) -> tuple[float, float]:
    """A (low, high) pair from a pair, or from a scalar x: (-x, x) if symmetric else (x, x)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"{what} must be a number or a [low, high] pair, got {value!r}")
        low, high = _number(value[0], what), _number(value[1], what)
    else:
        x = _number(value, what)
        low, high = (-abs(x), abs(x)) if symmetric else (x, x)
    if low > high:
        raise ValueError(f"{what} must have low <= high, got {value!r}")
    return low, high


def _one_plus_range(value: Any, what: str) -> tuple[float, float]:
    """albumentations' "one-plus" range (CLAHE clip_limit, RandomGamma gamma_limit): a scalar x means (1, x);
    both bounds must be >= 1."""
    low, high = _range(value, what, symmetric=False)
    if not isinstance(value, (list, tuple)):
        low = 1.0
    if low < 1.0 or high < low:
        raise ValueError(f"{what} must be >= 1 (a number x meaning [1, x], or a [low, high] pair), got {value!r}")
    return low, high


def _apply_mask(p: float, batch: int, device: torch.device) -> torch.Tensor:
    """Which samples of the batch an op applies to: (B,) bool, Bernoulli(p) each."""
    return torch.rand(batch, device=device) < p


# ----------------------------------------------------------------------------- ops
class _Geometric:
    """One kornia geometric augmentation applied with identical parameters to image and mask."""

    def __init__(self, aug: K.AugmentationBase2D):
        # masks are resampled with nearest interpolation by AugmentationSequential's default extra_args
        self.seq = K.AugmentationSequential(aug, data_keys=["input", "mask"])

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.seq(image, mask)
        return image, mask

    def __repr__(self) -> str:
        return repr(self.seq[0])


class _BrightnessContrast:
    """albumentations RandomBrightnessContrast (brightness_by_max=True): img * alpha + beta, clamped.

    alpha = 1 + U(contrast_limit), beta = U(brightness_limit); one coin flip p for both, as in albumentations.
    Written directly (not kornia RandomBrightness + RandomContrast) to keep that single p and the order.
    """

    def __init__(self, brightness_limit: Any = 0.2, contrast_limit: Any = 0.2, p: Any = 0.5):
        self.brightness = _range(brightness_limit, "brightness_limit", symmetric=True)
        self.contrast = _range(contrast_limit, "contrast_limit", symmetric=True)
        self.p = _prob(p)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, dev = image.shape[0], image.device
        shape = (b, 1, 1, 1)
        alpha = 1.0 + torch.empty(shape, device=dev).uniform_(*self.contrast)
        beta = torch.empty(shape, device=dev).uniform_(*self.brightness)
        apply = _apply_mask(self.p, b, dev).view(shape)
        out = (image * alpha + beta).clamp_(0.0, 1.0)
        return torch.where(apply, out, image), mask

    def __repr__(self) -> str:
        return f"RandomBrightnessContrast(brightness={self.brightness}, contrast={self.contrast}, p={self.p})"


class _Gamma:
    """albumentations RandomGamma: img ** (U(gamma_limit) / 100), via kornia RandomGamma (clamps to [0, 1]).

    As in albumentations, a scalar gamma_limit g means (1, g) - usually not what one wants; give a pair.
    """

    def __init__(self, gamma_limit: Any = (80, 120), p: Any = 0.5):
        low, high = _one_plus_range(gamma_limit, "gamma_limit")
        self.aug = K.RandomGamma(gamma=(low / 100.0, high / 100.0), p=_prob(p))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # torch.pow of a negative base is NaN; clamp first since the op assumes [0, 1] images anyway
        return self.aug(image.clamp(0.0, 1.0)), mask

    def __repr__(self) -> str:
        return repr(self.aug)


class _Clahe:
    """albumentations CLAHE via kornia RandomClahe (kornia.enhance.equalize_clahe with a per-sample clip limit).

    clip_limit x means U(1, x) per sample, as in albumentations; a [low, high] pair is used as is. Like OpenCV,
    each tile's histogram is clipped at clip_limit * tile_pixels / 256. tile_grid_size is OpenCV's
    (tiles along x, tiles along y); kornia wants (rows, cols), hence the swap.
    """

    def __init__(self, clip_limit: Any = 4.0, tile_grid_size: Any = (8, 8), p: Any = 0.5):
        clip = _one_plus_range(clip_limit, "clip_limit")
        if (
            not isinstance(tile_grid_size, (list, tuple))
            or len(tile_grid_size) != 2
            or not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in tile_grid_size)
        ):
            raise ValueError(f"tile_grid_size must be a pair of positive integers, got {tile_grid_size!r}")
        grid = (int(tile_grid_size[1]), int(tile_grid_size[0]))
        self.aug = K.RandomClahe(clip_limit=clip, grid_size=grid, p=_prob(p))

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.shape[1] != 3:
            return self.aug(image), mask  # RandomClahe clamps selected samples to [0, 1] itself
        # RGB: kornia would equalize each channel on its own and shift the colours; albumentations equalizes the
        # lightness of LAB only, and so does this
        lab = rgb_to_lab(image.clamp(0.0, 1.0))
        lightness = lab[:, :1] / 100.0
        equalized = self.aug(lightness)
        picked = (equalized != lightness).flatten(1).any(1).view(-1, 1, 1, 1)  # the samples its coin chose
        rgb = lab_to_rgb(torch.cat([equalized * 100.0, lab[:, 1:]], 1)).clamp_(0.0, 1.0)
        return torch.where(picked, rgb, image), mask

    def __repr__(self) -> str:
        return repr(self.aug)


# ----------------------------------------------------------------------------- factories (config names)
def _horizontal_flip(p: Any = 0.5) -> Op:
    return _Geometric(K.RandomHorizontalFlip(p=_prob(p)))


def _vertical_flip(p: Any = 0.5) -> Op:
    return _Geometric(K.RandomVerticalFlip(p=_prob(p)))


def _rotate(limit: Any = 90, p: Any = 0.5) -> Op:
    """albumentations Rotate: angle ~ U(-limit, limit) degrees (or U(low, high)); positive = counter-clockwise."""
    degrees = _range(limit, "limit", symmetric=True)
    # align_corners=True: rotate about ((W-1)/2, (H-1)/2) with pixel-centre coordinates, like cv2.warpAffine
    return _Geometric(K.RandomRotation(degrees=degrees, p=_prob(p), align_corners=True))


def _affine(degrees: Any = 0, translate: Any = 0, scale: Any = 1, p: Any = 0.5) -> Op:
    """Random affine: degrees like Rotate's limit (positive = counter-clockwise); translate = max shift as a
    fraction of width/height (a number or [tx, ty]); scale = a [low, high] range or a fixed factor."""
    low, high = _range(degrees, "degrees", symmetric=True)
    # kornia's RandomAffine turns a positive angle clockwise, RandomRotation and albumentations counter-clockwise:
    # negate the range so that positive means counter-clockwise here too (checked against albumentations in tests)
    deg = (-high, -low)
    if isinstance(translate, (list, tuple)):
        tx, ty = _range(translate, "translate", symmetric=False)
    else:
        tx = ty = _number(translate, "translate")
    if not (0.0 <= tx <= 1.0 and 0.0 <= ty <= 1.0):
        raise ValueError(f"translate must be in [0, 1], got {translate!r}")
    sc = _range(scale, "scale", symmetric=False)
    if sc[0] <= 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    aug = K.RandomAffine(
        degrees=deg,
        translate=(tx, ty) if (tx or ty) else None,
        scale=sc if sc != (1.0, 1.0) else None,
        padding_mode="zeros",
        align_corners=True,  # same pixel-centre convention as _rotate / cv2
        p=_prob(p),
    )
    return _Geometric(aug)


GPU_TRANSFORMS: dict[str, Callable[..., Op]] = {
    "HorizontalFlip": _horizontal_flip,
    "VerticalFlip": _vertical_flip,
    "Rotate": _rotate,
    "Affine": _affine,
    "RandomBrightnessContrast": _BrightnessContrast,
    "RandomGamma": _Gamma,
    "CLAHE": _Clahe,
}


# ----------------------------------------------------------------------------- public API
class GpuAugment:
    """A sequence of ops applied to (image, mask) batches on their own device, in config order."""

    def __init__(self, ops: list[Op]):
        self.ops = list(ops)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 4 or mask.ndim != 4:
            raise ValueError(f"expected image (B, C, H, W) and mask (B, C, H, W), got {tuple(image.shape)} "
                             f"and {tuple(mask.shape)}")
        if image.shape[0] != mask.shape[0] or image.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in batch or spatial size")
        image_dtype, mask_dtype = image.dtype, mask.dtype
        # compute in float32: bfloat16/half lose too much precision in warps, and grid_sample rejects uint8
        x, m = image.float(), mask.float()
        for op in self.ops:
            x, m = op(x, m)
        return x.to(image_dtype), m.to(mask_dtype)

    def __repr__(self) -> str:
        return "GpuAugment([" + ", ".join(repr(op) for op in self.ops) + "])"


def build_gpu_transforms(specs: list[dict] | None, key: str) -> GpuAugment | None:
    """Build a GpuAugment from config entries like {'name': 'Rotate', 'limit': 10, 'p': 0.5}; empty -> None."""
    if not check_spec_list(specs, key):
        return None
    valid = sorted(GPU_TRANSFORMS)
    ops = []
    for i, spec in enumerate(specs):
        where = f"{key}[{i}]"
        name, params = split_spec(spec, where, valid)
        factory = GPU_TRANSFORMS[name]
        accepted = [n for n in inspect.signature(factory).parameters if n != "self"]
        unknown = [k for k in params if k not in accepted]
        if unknown:
            raise ConfigError(
                f"{where}: unknown parameter(s) {', '.join(map(repr, unknown))} for {name} "
                f"(valid: {', '.join(accepted)})"
            )
        try:
            ops.append(factory(**params))
        except (TypeError, ValueError, AssertionError) as exc:  # ours, or kornia's own checks
            raise ConfigError(f"{where}: invalid parameters for {name}: {one_line_error(exc)}") from exc
    return GpuAugment(ops)
