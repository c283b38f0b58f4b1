"""Campaign throughput and the sweep machinery's overhead per trial, side by side in one run.

Runs the same K-point grid (trainer.seed = 1..K of one config) three ways, each from a fresh folder:
  (a) K plain `train.py` runs one after another (how runs are launched by hand),
  (b) `sweep.py --workers 1`,
  (c) `sweep.py --workers N`,
and prints wall seconds, trials per hour, and the overhead per trial of (b) against (a): (b - a) / K. A negative
overhead means the sweep is cheaper than separate processes (one interpreter start for all its trials). From (b),
the time inside each trial not spent in its epochs is shown too: Optuna's trial duration minus the epoch seconds
of the trial's metrics.jsonl (config, Trainer start-up with data and model, Optuna's sampling and storage).

    python benchmarks/sweep_overhead.py --config configs/demo.yaml --points 4 --workers 2 \
        --set data.image_size=64 --set trainer.epochs=2
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

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def epoch_seconds(trial) -> float:
    records = Path(trial.user_attrs["run_dir"], "metrics.jsonl").read_text().splitlines()
    return sum(json.loads(line)["seconds"] for line in records)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--points", type=int, default=4, help="grid points (trainer.seed = 1..K)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()

    sys.path.insert(0, str(ROOT))
    import optuna

    from campaign.study import open_storage
    from data.pipeline import ensure_dataset
    from utils.config import load_config

    ensure_dataset(load_config(ROOT / args.config, args.overrides).data, progress=False)
    sets = [arg for item in args.overrides for arg in ("--set", item)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets += ["--set", f"data.cache_dir={tmp / 'cache'}"]
        space = tmp / "space.yaml"
        space.write_text(f"trainer.seed: {{grid: {list(range(1, args.points + 1))}}}\n")
        timed([sys.executable, "train.py", "--config", args.config, "--out", str(tmp / "warm"), "--no-progress",
               *sets])  # builds the cache once, so that no measured run pays for it
        plain = sum(timed([sys.executable, "train.py", "--config", args.config, "--out", str(tmp / f"plain{seed}"),
                           "--no-progress", *sets, "--set", f"trainer.seed={seed}"])
                    for seed in range(1, args.points + 1))
        walls, machinery = {}, None
        for workers in (1, args.workers):
            out = tmp / f"sweep{workers}"
            walls[workers] = timed([sys.executable, "sweep.py", "--config", args.config, "--space", str(space),
                                    "--study", "bench", "--out", str(out), "--workers", str(workers), *sets])
            trials = optuna.load_study(study_name="bench", storage=open_storage(f"sqlite:///{out / 'study.db'}"))
            trials = trials.get_trials()
            assert len(trials) == args.points and all(t.state.name == "COMPLETE" for t in trials)
            if workers == 1:
                machinery = sum((t.datetime_complete - t.datetime_start).total_seconds() - epoch_seconds(t)
                                for t in trials)
    per_run = plain / args.points
    print(f"config {args.config} {' '.join(args.overrides)}; {args.points}-point grid; {os.cpu_count()} CPU cores")
    print(f"  (a) {args.points} x train.py:      {plain:7.1f} s  {3600 * args.points / plain:7.1f} runs/h")
    for workers, wall in walls.items():
        print(f"  ({'b' if workers == 1 else 'c'}) sweep.py --workers {workers}: {wall:7.1f} s  "
              f"{3600 * args.points / wall:7.1f} trials/h  ({plain / wall:.2f}x the plain runs)")
    print(f"  overhead per trial, (b) vs (a): {(walls[1] - plain) / args.points:+.1f} s "
          f"(train.py alone: {per_run:.1f} s per run)")
    print(f"  (b) time per trial outside its epochs (config, Trainer start-up, Optuna): "
          f"{machinery / args.points:.1f} s")


if __name__ == "__main__":
    main()
