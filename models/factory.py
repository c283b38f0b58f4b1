"""One door to every model: `build_model(cfg.model, num_classes)` returns a module mapping (B, in, H, W) to logits
(B, num_classes, H, W); a model with an auxiliary head returns (logits, aux logits) in training mode only.

segmentation-models-pytorch provides the architectures and encoders (its own and timm's via "tu-<name>");
torchvision provides the FCN baseline of the competition; MONAI provides SwinUNETR; EffiSegNet and HRNet-OCR,
which no maintained package here ships, are written once in this folder; "package.module:Name" or
"path/to/file.py:Name" builds the user's own model.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import pickletools
import warnings
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from models.effisegnet import EffiSegNet
from models.hrnet_ocr import HRNetOCR
from models.swin_unetr import SwinUNETR2d
from utils.config import ModelConfig
from utils.errors import ConfigError
from utils.plugins import call_plugin, is_plugin, load_plugin

SMP_ARCHS = {name.lower(): name for name in (
    "Unet", "UnetPlusPlus", "DeepLabV3", "DeepLabV3Plus", "FPN", "MAnet", "PSPNet", "PAN", "Linknet", "UPerNet",
    "Segformer", "DPT")}
OWN_ARCHS = {name.lower(): name for name in ("SwinUNETR", "EffiSegNet", "HRNetOCR")}


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
    if is_plugin(cfg.arch):
        model, encoder = _plugin_model(cfg, num_classes, hub_weights), None
    elif arch in ("fcn_resnet50", "fcn_resnet101"):
        if hub_weights:
            raise ConfigError("model.encoder_weights: torchvision FCN takes null or a local file, not a hub name")
        model = TorchvisionFCN(int(arch.split("resnet")[1]), num_classes, cfg.in_channels, **cfg.params)
        encoder = model.net.backbone
    elif arch in SMP_ARCHS:
        model = _build_or_explain(SMP_ARCHS[arch], cfg, lambda: smp.create_model(
            SMP_ARCHS[arch], encoder_name=cfg.encoder, encoder_weights=hub_weights, in_channels=cfg.in_channels,
            classes=num_classes, **cfg.params))
        encoder = model.encoder
    elif arch in OWN_ARCHS:
        model = _build_or_explain(OWN_ARCHS[arch], cfg, lambda: _own_model(arch, cfg, num_classes, hub_weights))
        encoder = model.encoder
    else:
        names = sorted(list(SMP_ARCHS.values()) + list(OWN_ARCHS.values()) + ["fcn_resnet50", "fcn_resnet101"])
        by_lower = {name.lower(): name for name in names}
        close = difflib.get_close_matches(arch, by_lower, n=1, cutoff=0.4)
        hint = f" (did you mean '{by_lower[close[0]]}'?)" if close else f" (choose from {', '.join(names)})"
        raise ConfigError(f"model.arch: unknown architecture {cfg.arch!r}{hint}; a plug-in is written "
                          f"'package.module:Name' or 'path/to/file.py:Name'")
    if local_weights:
        # MONAI's self-supervised Swin weights carry "module." or "swin_vit." before the encoder's own names
        prefixes = ("module.", "swinViT.", "swin_vit.", "encoder.") if arch == "swinunetr" else ("encoder.",)
        if encoder is None:  # a plug-in: the weights are the whole model's (perhaps saved from DataParallel)
            encoder, prefixes = model, ("module.",)
        _load_encoder_weights(encoder, local_weights, prefixes)
    if cfg.head_prior is not None:
        _init_head_bias(model, num_classes, cfg.head_prior)
    return model


def check_model(cfg: ModelConfig, num_classes: int) -> None:
    """Refuse an architecture, encoder and params that do not fit (HRNetOCR on a ResNet, a SwinUNETR feature_size
    that is not a multiple of 12, an unknown name) before any data work or run folder: build the model and drop it.
    A local weights file need only exist here (loading it twice would print its warnings twice). On the CPU, not
    the meta device, where some encoders' constructors fail (Tensor.item() in timm's drop-path schedules)."""
    local = _local_weights_path(cfg.encoder_weights)
    build_model(dataclasses.replace(cfg, encoder_weights=None if local else cfg.encoder_weights, head_prior=None),
                num_classes)


def _build_or_explain(name: str, cfg: ModelConfig, build):
    """Library errors for a bad encoder name or size parameter, as one line naming the architecture."""
    try:
        return build()
    except (KeyError, ValueError, TypeError, RuntimeError, AssertionError) as e:
        message = " ".join(str(e).split())[:300]
        raise ConfigError(f"model: cannot build {name} with encoder {cfg.encoder!r} and params {cfg.params}: "
                          f"{message}") from None


def _own_model(arch: str, cfg: ModelConfig, num_classes: int, hub_weights: str | None) -> nn.Module:
    if arch == "swinunetr":
        if hub_weights:
            raise ConfigError("model.encoder_weights: SwinUNETR takes null or a local file (MONAI's self-supervised "
                              "weights), not a hub name")
        return SwinUNETR2d(cfg.in_channels, num_classes, **cfg.params)
    if arch == "effisegnet":
        return EffiSegNet(cfg.in_channels, num_classes, encoder=cfg.encoder, encoder_weights=hub_weights, **cfg.params)
    backbone = cfg.encoder.removeprefix("tu-")
    if not backbone.startswith("hrnet"):
        raise ConfigError(f"model.encoder: HRNetOCR needs a timm HRNet (hrnet_w18, hrnet_w32, hrnet_w48, hrnet_w64), "
                          f"not {cfg.encoder!r}")
    # any hub name means timm's own pretrained weights (downloaded from the Hugging Face hub)
    return HRNetOCR(cfg.in_channels, num_classes, backbone=backbone, pretrained=hub_weights is not None, **cfg.params)


def _plugin_model(cfg: ModelConfig, num_classes: int, hub_weights: str | None) -> nn.Module:
    """The user's class or function, called as Name(in_channels=..., classes=..., **model.params)."""
    if hub_weights:
        raise ConfigError("model.encoder_weights: a plug-in model takes null or a local file, not a hub name")
    target = load_plugin(cfg.arch, "model.arch")
    model = call_plugin(target, "model.arch", cfg.arch, in_channels=cfg.in_channels, classes=num_classes,
                        **cfg.params)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.arch: {cfg.arch} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _init_head_bias(model: nn.Module, num_classes: int, prior: float) -> None:
    """Bones cover a few percent of the pixels: starting every output at p=0.5 makes the first hundreds of steps
    push all pixels to background, a plateau from which small bones recover slowly. Starting at the prior
    (as RetinaNet does) skips it."""
    heads = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == num_classes]
    if not heads or heads[-1].bias is None:
        print(f"warning: model.head_prior: {type(model).__name__} has no output convolution with a bias and "
              f"{num_classes} channels; its framework initialization is kept")
        return
    nn.init.constant_(heads[-1].bias, math.log(prior / (1 - prior)))


def _local_weights_path(value):
    if value is None:
        return None
    path = Path(value)
    if path.suffix in (".pt", ".pth", ".bin", ".safetensors") or path.exists():
        if not path.is_file():
            raise ConfigError(f"model.encoder_weights: file not found: {path}")
        return path
    return None


def _load_encoder_weights(encoder: nn.Module, path: Path, prefixes: tuple[str, ...] = ("encoder.",)) -> None:
    """Load the tensors of a state dict that fit the encoder (same name after dropping `prefixes`, same shape) and
    report the rest: weights pretrained for another shape (e.g. MONAI's 3-D Swin weights in the 2-D model) load
    where they can."""
    state = _read_weights(path)
    state = {_strip_prefixes(k, prefixes): v for k, v in state.items()}
    own = encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise ConfigError(f"model.encoder_weights: {path} holds no tensor that fits the encoder")
    missing = [k for k in own if k not in matched]
    unused = [k for k in state if k not in matched]
    encoder.load_state_dict(matched, strict=False)
    if missing:
        print(f"warning: {path}: {len(missing)} encoder tensors were not in the file and keep their initialization "
              f"(e.g. {missing[0]})")
    if unused:
        print(f"warning: {path}: {len(unused)} tensors of the file do not fit the encoder (unknown name or another "
              f"shape) and were skipped (e.g. {unused[0]})")


def _read_weights(path: Path) -> dict:
    """The named tensors of a .safetensors file or of a torch file loaded with weights_only=True: a pickle that
    would run code is refused without running it, and any other file is one line naming it."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # SafetensorError (a Rust exception type), OSError, ...
            raise ConfigError(f"{path}: not a safetensors weights file ({_short(e)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about the pickle protocol of files it then refuses
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, EOFError, RuntimeError, KeyError, ... for a foreign file
        if _holds_python_objects(path, e):
            raise ConfigError(f"{path}: not a weights file torch can load safely (it holds pickled Python objects, "
                              "refused without running them)") from None
        raise ConfigError(f"{path}: not a PyTorch/safetensors weights file ({_short(e)})") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds a {type(state).__name__}, not a state dict of named tensors")
    return {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}


_CODE_OPCODES = {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "BUILD"}


def _holds_python_objects(path: Path, error: Exception) -> bool:
    """Whether torch refused the file for naming Python objects (its weights-only unpickler says so for a zip
    checkpoint; a plain pickle it only calls unsupported, so its opcodes are listed, never executed)."""
    if "GLOBAL" in str(error):
        return True
    try:
        with open(path, "rb") as f:
            return any(op.name in _CODE_OPCODES for op, _, _ in pickletools.genops(f))
    except Exception:  # not a pickle at all (pickletools raises ValueError, or anything on random bytes)
        return False


def _short(error: Exception) -> str:
    text = " ".join(str(error).split())
    if "weights_only" in text:  # torch's advice to load with weights_only=False (run the file's code): not given
        text = text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip() \
            if "WeightsUnpickler error:" in text else "a pickle torch does not know"
    text = text[:160]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _strip_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, stripped = key.removeprefix(prefix), True
    return key
