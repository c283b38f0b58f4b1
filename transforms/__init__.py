"""Data augmentation: albumentations on the CPU (in the Dataset) and kornia on the device (in the trainer)."""

from transforms.cpu import CPU_TRANSFORMS, apply_cpu_transforms, build_cpu_transforms
from transforms.gpu import GPU_TRANSFORMS, GpuAugment, build_gpu_transforms
from transforms.sobel import Sobel

__all__ = [
    "CPU_TRANSFORMS",
    "GPU_TRANSFORMS",
    "GpuAugment",
    "Sobel",
    "apply_cpu_transforms",
    "build_cpu_transforms",
    "build_gpu_transforms",
]
