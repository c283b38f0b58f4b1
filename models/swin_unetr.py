"""MONAI's SwinUNETR in 2-D (Hatamizadeh et al. 2022), the best single model of the 2024 report at 2048 sliding
windows. Sizes come from `model.params` (feature_size, depths, num_heads, window_size, use_v2, use_checkpoint,...).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR
from torch import nn

# patch embedding (2) then four patch mergings (2 each): inputs must be divisible by 2 ** 5
DIVISOR = 32


class SwinUNETR2d(nn.Module):
    """Pads the input to a multiple of 32 (edge values, like the image border) and crops the logits back, so that
    any image or window size works."""

    def __init__(self, in_channels: int, classes: int, **params):
        super().__init__()
        self.net = SwinUNETR(in_channels=in_channels, out_channels=classes, spatial_dims=2, **params)

    @property
    def encoder(self) -> nn.Module:
        """The Swin transformer, what MONAI's self-supervised weights hold."""
        return self.net.swinViT

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = -h % DIVISOR, -w % DIVISOR
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return self.net(x)[..., :h, :w]
