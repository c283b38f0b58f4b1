"""EffiSegNet: an EfficientNet encoder with a simplified decoder.

Vezakis, Georgas, Kalles, Matsopoulos, "EffiSegNet: Gastrointestinal Polyp Segmentation through a Pre-Trained
EfficientNet-based Network with a Simplified Decoder", 2024 (arXiv:2407.16298; code github.com/ivezakis/effisegnet).
No maintained package ships it, so it is written here, once. The decoder has no skip-connection U-shape: every
encoder stage is projected to one channel count, brought to the input resolution and summed; a small head then
mixes the sum. That is why it trains fast: nearly all parameters are the encoder's.
"""
from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from timm.models.ghostnet import GhostModule
from torch import nn


def _project(in_channels: int, channels: int) -> nn.Sequential:
    # the paper's order: 1x1 conv, ReLU, then BatchNorm
    return nn.Sequential(nn.Conv2d(in_channels, channels, 1, bias=False), nn.ReLU(inplace=True),
                         nn.BatchNorm2d(channels))


class EffiSegNet(nn.Module):
    """Any smp encoder name works; the paper's variants are EfficientNet b0-b7: "efficientnet-b0".."efficientnet-b7"
    (smp), "timm-efficientnet-b*" or "tu-efficientnet_b*" (timm)."""

    def __init__(self, in_channels: int, classes: int, encoder: str = "efficientnet-b4",
                 encoder_weights: str | None = None, channels: int = 32):
        super().__init__()
        # the encoder: five stages at strides 2, 4, 8, 16, 32 (smp also returns the input itself first, skipped)
        self.encoder = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=encoder_weights)
        # per stage: 1x1 conv to the common channel count, so that the stages can be summed
        self.project = nn.ModuleList(_project(c, channels) for c in self.encoder.out_channels[1:])
        # after the sum: BatchNorm and two Ghost modules (Han et al. 2020: half the channels by a 1x1 conv, the
        # other half by a cheap depthwise conv of those), timm's implementation
        self.mix = nn.Sequential(nn.BatchNorm2d(channels), GhostModule(channels, channels),
                                 GhostModule(channels, channels))
        # the head: 3x3 conv, ReLU, BatchNorm, then a 1x1 conv to the class logits
        self.head = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                                  nn.BatchNorm2d(channels), nn.Conv2d(channels, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        stages = self.encoder(x)[1:]
        # every stage upsampled (nearest, as in the paper) to the input resolution and summed
        total = sum(F.interpolate(project(f), size=size, mode="nearest") for project, f in zip(self.project, stages))
        return self.head(self.mix(total))
