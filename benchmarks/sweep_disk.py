"""Disk used by a sweep's runs folder, side by side in one run: the same K-point grid (trainer.seed = 1..K of one
config) with MLflow tracking,
  (a) keeping everything, as before `trainer.keep_last` and `logging.mlflow_log_checkpoint` existed: every finished
      trial keeps last.pt beside best.pt, and MLflow copies best.pt into its artifact store;
  (b) with the sweep's defaults: finished trials keep best.pt only, MLflow records its path;
and prints each runs folder's bytes (trial folders, MLflow store and artifacts, study database) and (b) / (a).

    python benchmarks/sweep_disk.py --config configs/demo.yaml --points 4 --set trainer.epochs=1
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEEP_EVERYTHING = ["trainer.keep_last=true", "logging.mlflow_log_checkpoint=true"]


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--points", type=int, default=4, help="grid points (trainer.seed = 1..K)")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        space = tmp / "space.yaml"
        space.write_text(f"trainer.seed: {{grid: {list(range(1, args.points + 1))}}}\n")
        common = ["--set", f"data.cache_dir={tmp / 'cache'}", "--set", "logging.backends=[mlflow]",
                  *(arg for item in args.overrides for arg in ("--set", item))]
        sizes = {}
        for name, extra in (("a: keep everything", KEEP_EVERYTHING), ("b: sweep defaults", [])):
            runs = tmp / name[0]
            command = [sys.executable, "sweep.py", "--config", args.config, "--space", str(space), "--study", "disk",
                       "--out", str(runs / "disk"), *common, *(arg for item in extra for arg in ("--set", item))]
            env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # the runs folder's store
            subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=env)
            sizes[name] = folder_bytes(runs)
            checkpoints = sorted(runs.rglob("*.pt"))
            print(f"{name}: {sizes[name] / 1e6:.1f} MB in {runs} ({len(checkpoints)} .pt files: "
                  f"{sum(p.stat().st_size for p in checkpoints) / 1e6:.1f} MB)", flush=True)
        a, b = sizes.values()
        print(f"{args.points}-trial sweep of {args.config}: {b / 1e6:.1f} MB instead of {a / 1e6:.1f} MB "
              f"({b / a:.2f} of it)")


if __name__ == "__main__":
    main()
