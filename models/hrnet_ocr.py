"""HRNet-OCR: an HRNet backbone (timm) with the object-contextual representations head.

Yuan, Chen, Wang, "Object-Contextual Representations for Semantic Segmentation", ECCV 2020 (arXiv:1909.11065;
reference code github.com/HRNet/HRNet-Semantic-Segmentation, branch HRNet-OCR). The maintained implementation is
MMSegmentation's OCRHead, which needs mmcv's compiled ops (no wheel for this torch), so the head is written here,
once, following the reference code. timm provides the backbone and its weights.

The head, at stride 4:
1. the four HRNet branches, upsampled to the finest and concatenated (the pixel features);
2. soft object regions: an auxiliary head predicts coarse class logits from those features (trained with its own
   loss weight, `loss.aux_weight`, and dropped at inference);
3. object region representations: for each class, the features averaged over the image weighted by the softmax
   (over positions) of its region logits;
4. pixel-region relation: each pixel attends over the class representations (scaled dot product);
5. object-contextual representation: the attended class representations, concatenated with the pixel features
   and fused, give the final logits.
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ObjectAttention(nn.Module):
    """Pixel-region relation and the object-contextual representation (the reference's ObjectAttentionBlock)."""

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.query = nn.Sequential(_conv_bn_relu(channels, key_channels), _conv_bn_relu(key_channels, key_channels))
        self.key = nn.Sequential(_conv_bn_relu(channels, key_channels), _conv_bn_relu(key_channels, key_channels))
        self.value = _conv_bn_relu(channels, key_channels)
        self.out = _conv_bn_relu(key_channels, channels)
        self.scale = key_channels ** -0.5

    def forward(self, pixels: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """pixels (B, C, h, w), objects (B, C, K, 1) -> context (B, C, h, w)."""
        b, _, h, w = pixels.shape
        query = self.query(pixels).flatten(2).transpose(1, 2)  # (B, hw, key)
        key = self.key(objects).flatten(2)  # (B, key, K)
        value = self.value(objects).flatten(2).transpose(1, 2)  # (B, K, key)
        relation = torch.softmax(query @ key * self.scale, dim=-1)  # (B, hw, K)
        context = (relation @ value).transpose(1, 2).reshape(b, -1, h, w)
        return self.out(context)


class HRNetOCR(nn.Module):
    """Returns logits at the input size; in training mode (main, soft object regions), both at the input size."""

    def __init__(self, in_channels: int, classes: int, backbone: str = "hrnet_w48", pretrained: bool = False,
                 mid_channels: int = 512, key_channels: int = 256, dropout: float = 0.05):
        super().__init__()
        # feature_location="": the raw branch outputs (widths w, 2w, 4w, 8w), not timm's classification increments
        self.encoder = timm.create_model(backbone, features_only=True, feature_location="", out_indices=(1, 2, 3, 4),
                                          in_chans=in_channels, pretrained=pretrained)
        channels = sum(self.encoder.feature_info.channels())
        self.regions = nn.Sequential(_conv_bn_relu(channels, channels), nn.Conv2d(channels, classes, 1))
        self.pixels = _conv_bn_relu(channels, mid_channels, 3)
        self.attention = ObjectAttention(mid_channels, key_channels)
        self.fuse = nn.Sequential(_conv_bn_relu(2 * mid_channels, mid_channels), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(mid_channels, classes, 1)

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        branches = self.encoder(x)
        fine = branches[0].shape[-2:]
        features = torch.cat([branches[0]] + [F.interpolate(f, size=fine, mode="bilinear", align_corners=False)
                                              for f in branches[1:]], dim=1)
        regions = self.regions(features)  # (B, K, h, w) soft object regions
        pixels = self.pixels(features)  # (B, C, h, w)
        weights = torch.softmax(regions.flatten(2).float(), dim=2).to(pixels.dtype)  # (B, K, hw)
        objects = (weights @ pixels.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(-1)  # (B, C, K, 1)
        context = self.attention(pixels, objects)
        logits = self.classifier(self.fuse(torch.cat([context, pixels], dim=1)))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if not self.training:
            return logits
        return logits, F.interpolate(regions, size=size, mode="bilinear", align_corners=False)
