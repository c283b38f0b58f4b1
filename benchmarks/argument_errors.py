"""CPU seconds of a one-line argument error (a missing checkpoint, config, CSV, run folder) in each entry script,
side by side with what the same error cost when it came after the libraries' imports: the CPU seconds of importing
the modules the script imported before reaching that check until it was moved first (torch, the model libraries,
the trainer, tracking, analysis). Each command runs --repeat times in a fresh interpreter; the median of the
child's user + system CPU time is shown.

    python benchmarks/argument_errors.py --repeat 3
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# error -> (command, the modules the script imported before reaching that error until this change)
CASES = {
    "train.py --resume missing/last.pt": (["train.py", "--resume", "missing/last.pt"],
                                          "trainer.trainer, tracking.build"),
    "train.py --config missing.yaml": (["train.py", "--config", "missing.yaml"], "trainer.trainer, tracking.build"),
    "inference.py --checkpoint missing.pt": (["inference.py", "--checkpoint", "missing.pt"],
                                             "trainer.inference, tasks.registry, trainer.runtime"),
    "inference.py --check missing.csv": (["inference.py", "--check", "missing.csv", "--data", "."],
                                         "tasks.registry, trainer.runtime"),
    "ensemble.py --checkpoints missing.pt": (["ensemble.py", "--checkpoints", "missing.pt"],
                                             "trainer.inference, tasks.registry, trainer.runtime"),
    "pseudo_label.py --checkpoints missing.pt": (["pseudo_label.py", "--checkpoints", "missing.pt", "--out", "p"],
                                                 "trainer.inference"),
    "analyze.py --run missing/": (["analyze.py", "--run", "missing"], "analysis.analyze_run"),
    "visualize.py submission --csv missing.csv": (["visualize.py", "submission", "--csv", "missing.csv", "--data",
                                                   "."], "analysis.visualize"),
}


def cpu_seconds(command: list[str], expect_error: bool) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if expect_error and (done.returncode != 2 or not done.stderr.startswith("error: ")):
        raise SystemExit(f"{' '.join(command)}: expected a one-line error, got {done.returncode}: {done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    print("| error | CPU s now | CPU s of the imports it came after | ratio |\n|---|---:|---:|---:|")
    for name, (command, modules) in CASES.items():
        now = statistics.median(cpu_seconds(command, True) for _ in range(args.repeat))
        before = statistics.median(cpu_seconds(["-c", f"import {modules}"], False) for _ in range(args.repeat))
        print(f"| `{name}` | {now:.2f} | {before:.2f} | {before / now:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
