"""Datasets over the sample cache. They hand out uint8 tensors: normalization and unpacking happen on the device.

Shipping uint8 images and bit-packed masks keeps the host-to-device copy 4x (images) and 8x (masks) smaller than
float tensors; the CPU transforms (albumentations) need unpacked masks, so only then are masks unpacked here.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from data.cache import SampleCache
from transforms.cpu import apply_cpu_transforms

_BIT_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def unpack_mask_bits(bits: torch.Tensor, width: int) -> torch.Tensor:
    """(..., W/8) packed uint8 (numpy's big-endian bit order) -> (..., W) uint8 0/1, on the tensor's device."""
    weights = _BIT_WEIGHTS.to(bits.device)
    unpacked = (bits.unsqueeze(-1) & weights).ne(0).to(torch.uint8)
    return unpacked.flatten(-2)[..., :width]


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W) grayscale or (H, W, 3) RGB uint8 -> (C, H, W) uint8 tensor (copied: cache views are read-only)."""
    image = np.ascontiguousarray(image)
    return torch.from_numpy(image[None].copy() if image.ndim == 2 else image.transpose(2, 0, 1).copy())


class TrainDataset(Dataset):
    """Training samples, optionally random crops (x at multiples of 8, so packed masks are cut without unpacking).

    Bit-plane masks (multilabel) travel packed as "mask_bits", or unpacked as "mask" after CPU transforms;
    label maps (multiclass) travel as "labels" (H, W) uint8, after copy-paste (`copy_paste`) when configured.
    """

    def __init__(self, cache: SampleCache, indices, transform=None, crop_size: int | None = None, copy_paste=None):
        self.cache = cache
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.crop_size = crop_size
        self.copy_paste = copy_paste

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int) -> dict:
        i = self.indices[n]
        if self.cache.label_kind == "map":
            return self._labelled(i)
        image, bits = self.cache.image(i), self.cache.mask_bits(i)
        width = image.shape[1]
        if self.crop_size:
            image, bits = self._crop(image, bits)
            width = self.crop_size
        if self.transform is None:
            return {"image": image_tensor(image), "mask_bits": torch.from_numpy(np.array(bits))}
        mask = np.unpackbits(bits, axis=2, count=width).transpose(1, 2, 0)  # (H, W, C) for albumentations
        image, mask = apply_cpu_transforms(self.transform, np.ascontiguousarray(image), np.ascontiguousarray(mask))
        return {"image": image_tensor(image), "mask": torch.from_numpy(np.ascontiguousarray(mask.transpose(2, 0, 1)))}

    def _labelled(self, i: int) -> dict:
        image, labels = self.cache.image(i), self.cache.labels(i)
        if self.copy_paste is not None:
            # seeded from torch, which seed_everything and the DataLoader workers seed per epoch and worker
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ())))
            image, labels = self.copy_paste(image, labels, rng)
        if self.crop_size:
            image, labels = self._crop(image, labels, step=1)
        if self.transform is not None:
            image, labels = apply_cpu_transforms(self.transform, np.ascontiguousarray(image),
                                                 np.ascontiguousarray(labels))
        return {"image": image_tensor(image), "labels": torch.from_numpy(np.array(labels, dtype=np.uint8))}

    def _crop(self, image: np.ndarray, masks: np.ndarray, step: int = 8):
        """A random crop; `masks` are packed bits (C, H, W/8) when step is 8, else an (H, W) label map."""
        c = self.crop_size
        h, w = image.shape[:2]
        if c > h or c > w:
            key = self.cache.keys[self.indices[0]]
            raise ValueError(f"crop size {c} is larger than the cached image {key} ({w}x{h})")
        y0 = int(torch.randint(0, h - c + 1, ()))
        x0 = step * int(torch.randint(0, (w - c) // step + 1, ()))
        if step == 1:
            return image[y0:y0 + c, x0:x0 + c], masks[y0:y0 + c, x0:x0 + c]
        return image[y0:y0 + c, x0:x0 + c], masks[:, y0:y0 + c, x0 // 8:(x0 + c) // 8]


class ImageDataset(Dataset):
    """Whole images for prediction (validation, inference), with the deterministic CPU transforms applied."""

    def __init__(self, cache: SampleCache, indices=None, transform=None):
        self.cache = cache
        self.indices = list(range(len(cache))) if indices is None else [int(i) for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, n: int) -> dict:
        i = self.indices[n]
        image = np.array(self.cache.image(i))
        if self.transform is not None:
            image, _ = apply_cpu_transforms(self.transform, image, None)
        return {"image": image_tensor(image), "index": i}
