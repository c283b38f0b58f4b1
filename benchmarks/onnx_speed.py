"""Whole test-folder inference from an ONNX file (ONNX Runtime) against the checkpoint (eager PyTorch), side by
side in one run, for several model sizes on the CPU.

  end to end:  inference.py's path as a user runs it (load the model, decode and resize in loader workers,
               predict, full-size masks, RLE, CSV), each run in its own process, the checkpoint and the ONNX file
               alternating, best of --repeats; wall time and the main process's CPU time. The two CSVs are
               compared pixel by pixel.
  model only:  the Predictor (normalization, network, activation) on one input already in memory, at 1 and at
               the default number of threads (torch.set_num_threads; the ONNX session takes the same number of
               intra-op threads), alternating, best of --repeats; the gap between this and end to end is the
               data and full-size time the two paths share.

The checkpoints hold untrained weights (the cost of a forward pass does not depend on them; head_prior keeps the
masks nearly empty, so the shared full-size tail is small and the ratio shows the model's share at its largest).

    python benchmarks/onnx_speed.py                                  # demo U-Net/ResNet18 @128, UNet++/ResNet34 @512
    python benchmarks/onnx_speed.py --models configs/demo.yaml:128 --test-ids 8 --size 1024
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = ["configs/demo.yaml:128", "configs/unetpp_lion_1024.yaml:512"]
CPU_SETTINGS = ['trainer.amp="off"', "trainer.device=cpu", "trainer.compile=false"]  # ONNX Runtime runs float32


def make_checkpoint(config: str, size: int, data: Path, out: Path) -> Path:
    """best.pt of the config at `size` with untrained weights, as train.py would save it."""
    from models.factory import build_model
    from trainer.checkpoint import save_checkpoint
    from utils.config import load_config, to_dict

    cfg = load_config(ROOT / config, [f"data.image_size={size}", f"data.root={data}", "data.synthetic=null",
                                      *CPU_SETTINGS])
    torch.manual_seed(0)
    model = build_model(cfg.model, len(cfg.task.classes)).eval()
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "classes": cfg.task.classes},
                    out / "best.pt")
    return out / "best.pt"


def end_to_end(model: Path, data: Path, out: Path, workers: int) -> dict:
    """inference.py in a fresh process (this script with --child); the child times main() itself: imports
    excluded, model loading included."""
    command = [sys.executable, __file__, "--child", "--checkpoint", str(model), "--data", str(data), "--out",
               str(out), "--workers", str(workers), "--no-progress"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"inference of {model} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(argv: list[str]) -> None:
    import inference

    start, cpu = time.perf_counter(), time.process_time()
    inference.main(argv)
    print(json.dumps({"s": time.perf_counter() - start, "cpu": time.process_time() - cpu}))


def model_only(checkpoint: Path, onnx_file: Path, threads: int, repeats: int) -> tuple[float, float]:
    """ms per image of the checkpoint's and the ONNX file's Predictor, alternating, best of `repeats`."""
    from trainer.inference import load_member, member_config
    from trainer.runtime import setup_runtime

    torch.set_num_threads(threads)
    members = []
    for path in (checkpoint, onnx_file):
        cfg = member_config(path)
        members.append(load_member(path, cfg, setup_runtime(cfg.trainer)))
    size, channels = members[0].image_size, members[0].cfg.model.in_channels
    x = torch.randint(0, 255, (1, channels, size, size), dtype=torch.uint8)
    best = [float("inf"), float("inf")]
    for member in members:
        member.predictor(x)  # warm-up: allocations, ONNX Runtime's first-run arena
    for _ in range(repeats):
        for i, member in enumerate(members):
            start = time.perf_counter()
            member.predictor(x)
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0] * 1000, best[1] * 1000


def differing_fraction(a: Path, b: Path, data: Path, classes: list[str]) -> float:
    from tasks.handbone.submission import read_submission, read_test_image_sizes
    from utils.rle import decode_rle

    sizes = read_test_image_sizes(data)
    left, right = read_submission(a, classes), read_submission(b, classes)
    differing = sum(int((decode_rle(x, *sizes[n]) != decode_rle(y, *sizes[n])).sum())
                    for n in sizes for x, y in zip(left[n], right[n]))
    return differing / sum(h * w * len(classes) for h, w in sizes.values())


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        return child(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="CONFIG:SIZE")
    p.add_argument("--test-ids", type=int, default=4, help="synthetic test persons (two hands each)")
    p.add_argument("--size", type=int, default=512, help="side of the synthetic test images")
    p.add_argument("--workers", type=int, default=2, help="inference.py --workers")
    p.add_argument("--repeats", type=int, default=2, help="end-to-end runs per path (best counts)")
    p.add_argument("--forward-repeats", type=int, default=5, help="model-only passes per path (best counts)")
    args = p.parse_args()

    import onnxruntime

    from tasks.handbone.synthetic import generate
    from trainer.export import export_checkpoint

    default_threads = torch.get_num_threads()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start; torch "
          f"{torch.__version__} ({default_threads} intra-op threads), onnxruntime {onnxruntime.__version__} "
          f"(intra-op threads = torch's), inference.py --workers {args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = generate(tmp / "data", ids=1, test_ids=args.test_ids, size=args.size, seed=1, progress=False)
        for spec in args.models:
            config, size = spec.rsplit(":", 1)
            folder = tmp / Path(config).stem
            checkpoint = make_checkpoint(config, int(size), data, folder)
            onnx_file = folder / "model.onnx"
            start = time.perf_counter()
            cfg, exported = export_checkpoint(checkpoint, onnx_file)
            export_s = time.perf_counter() - start
            runs: dict[str, list[dict]] = {"pt": [], "onnx": []}
            for _ in range(args.repeats):
                for name, model in (("pt", checkpoint), ("onnx", onnx_file)):
                    runs[name].append(end_to_end(model, data, folder / f"{name}.csv", args.workers))
            pt, ox = (min(runs[n], key=lambda r: r["s"]) for n in ("pt", "onnx"))
            fraction = differing_fraction(folder / "pt.csv", folder / "onnx.csv", data, cfg.task.classes)
            forward = {t: model_only(checkpoint, onnx_file, t, args.forward_repeats)
                       for t in sorted({1, default_threads})}
            torch.set_num_threads(default_threads)
            images = 2 * args.test_ids
            print(f"\n{cfg.model.arch}/{cfg.model.encoder} at {cfg.data.image_size}px (tta {cfg.predict.tta}, "
                  f"channels_last {cfg.trainer.channels_last}), {images} test images of {args.size}x{args.size}; "
                  f"exported by {exported.exporter} in {export_s:.0f} s, max |logit diff| {exported.max_abs_diff:.1e}")
            for label, name in (("checkpoint (PyTorch)", "pt"), ("ONNX file (ORT)", "onnx")):
                best = pt if name == "pt" else ox
                every = ", ".join(f"{r['s']:.1f} s" for r in runs[name])
                print(f"  end to end, {label:21s} {best['s'] / images * 1000:8.1f} ms/image  (main process CPU "
                      f"{best['cpu'] / images * 1000:.1f} ms/image; runs: {every})")
            print(f"  end to end speed-up       {pt['s'] / ox['s']:.2f}x;  differing pixels {fraction:.2e}")
            for threads, (t_ms, o_ms) in forward.items():
                print(f"  model only, {threads} thread(s):   PyTorch {t_ms:8.1f} ms/image, ORT {o_ms:8.1f} ms/image, "
                      f"speed-up {t_ms / o_ms:.2f}x")
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
