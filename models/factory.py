"""One door to every model: `build_model(cfg.model, num_classes)` returns a module mapping (B, in, H, W) to logits
(B, num_classes, H, W).

segmentation-models-pytorch provides the architectures and encoders (its own and timm's via "tu-<name>");
torchvision provides the FCN baseline of the competition.
"""
from __future__ import annotations

import difflib
import math
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from utils.config import ModelConfig
from utils.errors import ConfigError

SMP_ARCHS = {name.lower(): name for name in (
    "Unet", "UnetPlusPlus", "DeepLabV3", "DeepLabV3Plus", "FPN", "MAnet", "PSPNet", "PAN", "Linknet", "UPerNet",
    "Segformer", "DPT")}


class TorchvisionFCN(nn.Module):
    """torchvision's FCN returns a dict and expects 3 channels: adapt it to the project's (B, C, H, W) logits."""

    def __init__(self, depth: int, num_classes: int, in_channels: int, **params):
        super().__init__()
        from torchvision.models import segmentation

        builder = {50: segmentation.fcn_resnet50, 101: segmentation.fcn_resnet101}[depth]
        self.in_channels = in_channels
        self.net = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False, **params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_channels != 3:
            x = x.mean(1, keepdim=True).expand(-1, 3, -1, -1) if self.in_channels == 1 else x
        return self.net(x)["out"]


def build_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    arch = cfg.arch.lower()
    local_weights = _local_weights_path(cfg.encoder_weights)
    hub_weights = None if local_weights else cfg.encoder_weights
    if arch in ("fcn_resnet50", "fcn_resnet101"):
        if hub_weights:
            raise ConfigError("model.encoder_weights: torchvision FCN takes null or a local file, not a hub name")
        model = TorchvisionFCN(int(arch.split("resnet")[1]), num_classes, cfg.in_channels, **cfg.params)
        encoder = model.net.backbone
    elif arch in SMP_ARCHS:
        try:
            model = smp.create_model(SMP_ARCHS[arch], encoder_name=cfg.encoder, encoder_weights=hub_weights,
                                     in_channels=cfg.in_channels, classes=num_classes, **cfg.params)
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            message = " ".join(str(e).split())[:300]
            raise ConfigError(f"model: cannot build {SMP_ARCHS[arch]} with encoder {cfg.encoder!r}: "
                              f"{message}") from None
        encoder = model.encoder
    else:
        names = sorted(list(SMP_ARCHS.values()) + ["fcn_resnet50", "fcn_resnet101"])
        close = difflib.get_close_matches(cfg.arch, names, n=1, cutoff=0.4)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(names)})"
        raise ConfigError(f"model.arch: unknown architecture {cfg.arch!r}{hint}")
    if local_weights:
        _load_encoder_weights(encoder, local_weights)
    if cfg.head_prior is not None:
        _init_head_bias(model, num_classes, cfg.head_prior)
    return model


def _init_head_bias(model: nn.Module, num_classes: int, prior: float) -> None:
    """Bones cover a few percent of the pixels: starting every output at p=0.5 makes the first hundreds of steps
    push all pixels to background, a plateau from which small bones recover slowly. Starting at the prior
    (as RetinaNet does) skips it."""
    head = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes][-1]
    if head.bias is not None:
        nn.init.constant_(head.bias, math.log(prior / (1 - prior)))


def _local_weights_path(value):
    if value is None:
        return None
    path = Path(value)
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or path.exists():
        if not path.is_file():
            raise ConfigError(f"model.encoder_weights: file not found: {path}")
        return path
    return None


def _load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load an encoder state dict saved from the same encoder (keys may carry an `encoder.` prefix)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    state = {k.removeprefix("encoder."): v for k, v in state.items()}
    own = encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ConfigError(f"model.encoder_weights: {path} holds no tensor that fits the encoder")
    missing = [k for k in own if k not in matched]
    encoder.load_state_dict(matched, strict=False)
    if missing:
        print(f"warning: {path}: {len(missing)} encoder tensors were not in the file and keep their initialization "
              f"(e.g. {missing[0]})")
