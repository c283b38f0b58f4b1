"""Training images/s with 1 and N processes (torchrun, DistributedDataParallel), side by side in one run.

Each run trains `--epochs` epochs without validation; the first epoch (cache build, worker start-up) is left
out; images/s = training images per epoch / mean epoch seconds from the run's metrics.jsonl. Scaling efficiency
= rate(N) / (N * rate(1)). On a CPU, torchrun gives each process 1 thread while a lone process uses all cores.

    python benchmarks/ddp_scaling.py --config configs/demo.yaml --nproc 2 --epochs 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def train(config: str, nproc: int, epochs: int, overrides: list[str], out: Path) -> list[dict]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = (launcher if nproc > 1 else [sys.executable]) + ["train.py", "--config", config, "--out", str(out),
                                                               "--no-progress", "--set", f"trainer.epochs={epochs}",
                                                               "--set", f"trainer.val_every={epochs + 1}"]
    for item in overrides:
        command += ["--set", item]
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    sys.path.insert(0, str(ROOT))
    from data.splits import group_kfold
    from tasks.handbone.reader import scan_split
    from utils.config import load_config

    cfg = load_config(ROOT / args.config, args.overrides)
    from data.pipeline import ensure_dataset
    ensure_dataset(cfg.data, progress=False)
    train_images = len(group_kfold([s.group for s in scan_split(cfg.data.root, "train")], cfg.data.n_splits,
                                   cfg.data.fold)[0])
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, args.nproc):
            records = train(args.config, n, args.epochs, args.overrides, Path(tmp) / f"n{n}")
            seconds = [r["seconds"] for r in records[1:]]
            rates[n] = train_images / (sum(seconds) / len(seconds))
    print(f"config {args.config}, {os.cpu_count()} CPU cores, {train_images} training images, "
          f"batch {cfg.data.batch_size} per process, epochs 2..{args.epochs}")
    for n, r in rates.items():
        print(f"  {n} process(es): {r:7.1f} images/s")
    n = args.nproc
    print(f"  speed-up {rates[n] / rates[1]:.2f}x, scaling efficiency {rates[n] / (n * rates[1]):.0%}")


if __name__ == "__main__":
    main()
