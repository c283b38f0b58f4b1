"""The model zoo side by side, one table from one run: parameters, forward GFLOPs at 1024x1024 (one 1-channel
image, torch.utils.flop_counter on the meta device: counted, not run), forward images/s on the CPU at 256x256, and
on a CUDA GPU at 1024x1024 (bf16 autocast) when one is present.

    python benchmarks/model_zoo.py                       # every model config in configs/
    python benchmarks/model_zoo.py --configs configs/effisegnet_b4_1024.yaml --repeats 5
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.factory import build_model
from utils.config import ModelConfig, load_config

ROOT = Path(__file__).resolve().parents[1]

# one config per architecture family (the demo and 2048-crop configs repeat these models)
DEFAULT_CONFIGS = ["baseline_fcn_r50_512", "deeplabv3plus_1024", "unetpp_lion_1024", "swinunetr_2048_sliding",
                   "effisegnet_b4_1024", "hrnet_ocr_w48_1024", "upernet_convnext_1024", "upernet_swin_1024",
                   "unetpp_hrnet_w64_1024", "unetpp_maxvit_1024", "unetpp_effnetv2_1024", "unetpp_vgg19_1024",
                   "segformer_mit_b3_1024"]


def at_size(cfg: ModelConfig, size: int) -> ModelConfig:
    """Encoders that fix their input size at build time (Swin, MaxViT) are rebuilt for `size`."""
    cfg = copy.deepcopy(cfg)
    if "img_size" in cfg.params:
        cfg.params["img_size"] = size
    cfg.head_prior = None
    return cfg


def gflops(cfg: ModelConfig, classes: int, size: int) -> float:
    # built on the CPU (MONAI reads tensor values while building), then moved to the meta device
    model = build_model(at_size(cfg, size), classes).eval().to("meta")
    x = torch.empty(1, cfg.in_channels, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() / 1e9


def images_per_second(cfg: ModelConfig, classes: int, size: int, device: str, repeats: int) -> float:
    model = build_model(at_size(cfg, size), classes).to(device).eval()
    x = torch.randn(1, cfg.in_channels, size, size, device=device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    with torch.no_grad(), autocast:
        model(x)  # warm-up: allocations, cuDNN algorithm choice
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            model(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return repeats / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="*", default=[str(ROOT / "configs" / f"{n}.yaml") for n in DEFAULT_CONFIGS])
    p.add_argument("--flops-size", type=int, default=1024)
    p.add_argument("--cpu-size", type=int, default=256)
    p.add_argument("--gpu-size", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=3, help="timed forward passes after one warm-up")
    args = p.parse_args()

    gpu = torch.cuda.is_available()
    gpu_column = f"GPU img/s @{args.gpu_size} ({torch.cuda.get_device_name() if gpu else 'not measured: no GPU lent'})"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(f"| config | model.arch | model.encoder | params (M) | GFLOPs @{args.flops_size} | "
          f"CPU img/s @{args.cpu_size} | {gpu_column} |")
    print("|---|---|---|---:|---:|---:|---:|")
    for path in args.configs:
        cfg = load_config(path)
        classes = len(cfg.task.classes)
        params = sum(p.numel() for p in build_model(at_size(cfg.model, args.cpu_size), classes).parameters()) / 1e6
        flops = gflops(cfg.model, classes, args.flops_size)
        cpu = images_per_second(cfg.model, classes, args.cpu_size, "cpu", args.repeats)
        on_gpu = f"{images_per_second(cfg.model, classes, args.gpu_size, 'cuda', args.repeats):.1f}" if gpu else "-"
        encoder = "-" if cfg.model.arch == "SwinUNETR" or cfg.model.arch.startswith("fcn") else cfg.model.encoder
        print(f"| {Path(path).stem} | {cfg.model.arch} | {encoder} | {params:.1f} | {flops:.0f} | {cpu:.2f} | "
              f"{on_gpu} |", flush=True)


if __name__ == "__main__":
    main()
