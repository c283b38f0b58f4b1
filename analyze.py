"""See where a run fails and compare runs.

`python analyze.py --run runs/demo` writes runs/demo/report/index.html (learning curves, per-class Dice, worst
images, confusion between bones, boundary error, Dice against threshold, label-error candidates); for a multiclass
run the same in mIoU terms with the class confusion matrix and no threshold section.
`python analyze.py --compare runs/a runs/b runs/kfold --out comparison` writes compare.md/.csv/.html.
"""
from __future__ import annotations

import argparse

from utils.cli import require_dir, require_file, run_main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", metavar="RUN_DIR", help="a run directory (config.yaml, metrics.jsonl, best.pt)")
    mode.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="run directories (or k-fold run folders)")
    parser.add_argument("--checkpoint", help="checkpoint to analyze (default: RUN_DIR/best.pt)")
    parser.add_argument("--data", metavar="ROOT", help="dataset root, when it moved since training")
    parser.add_argument("--worst", type=int, default=6, metavar="K", help="validation images shown (default 6)")
    parser.add_argument("--cleansing", type=int, default=6, metavar="K",
                        help="training images with the lowest Dice (mIoU) shown (default 6; 0: skip that pass)")
    parser.add_argument("--out", default="comparison", help="--compare: output folder (default: comparison)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for folder in [args.run, *(args.compare or [])]:  # checked before the libraries load (seconds of CPU)
        require_dir(folder, "run directory")
    require_file(args.checkpoint, "checkpoint")
    require_dir(args.data, "data root")
    if args.compare:
        from analysis.compare import write_comparison

        for path in write_comparison(args.compare, args.out):
            print(f"wrote {path}")
        return 0
    from analysis.analyze_run import analyze_run

    path = analyze_run(args.run, args.checkpoint, args.data, max(args.worst, 0), max(args.cleansing, 0),
                       not args.no_progress)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
