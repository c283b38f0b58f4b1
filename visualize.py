"""Look at the data before and after a model.

`python visualize.py augment --config configs/demo.yaml [--n 4] [--draws 4]`: a grid of what training sees (crops,
CPU and GPU augmentations, several draws per image, masks overlaid).
`python visualize.py submission --csv output.csv --data ROOT [--n 8]`: a submission's masks on its test images.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from utils.cli import add_config_args, require_dir, require_file, run_main
from utils.errors import UserError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    augment = commands.add_parser("augment", help="grid of augmented training images")
    add_config_args(augment)
    augment.add_argument("--n", type=int, default=4, help="training images (rows; default 4)")
    augment.add_argument("--draws", type=int, default=4, help="random draws per image (columns; default 4)")
    augment.add_argument("--out", default="augment.png", help="output PNG (default augment.png)")
    augment.add_argument("--no-progress", action="store_true", help="no progress bars")
    submission = commands.add_parser("submission", help="grid of a submission's masks on the test images")
    submission.add_argument("--csv", required=True, help="submission CSV (image_name,class,rle)")
    submission.add_argument("--data", required=True, metavar="ROOT", help="dataset root with test/DCM/")
    submission.add_argument("--classes-from", default="configs/_base_/hand_bones.yaml", metavar="CONFIG",
                            help="config whose task.classes the CSV uses (default: the hand-bone classes)")
    submission.add_argument("--n", type=int, default=8, help="images (default 8)")
    submission.add_argument("--out", default="submission.png", help="output PNG (default submission.png)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.n < 1 or getattr(args, "draws", 1) < 1:
        raise UserError("--n and --draws must be at least 1")
    if args.command == "augment":  # files checked before the libraries load (seconds of CPU)
        require_file(args.config, "config file")
    else:
        require_file(args.csv, "submission file")
        require_dir(args.data, "data root")
        require_file(args.classes_from, "config file")
    from analysis.visualize import augment_grid, submission_grid
    from utils.config import load_config

    if args.command == "augment":
        from trainer.runtime import setup_runtime

        cfg = load_config(args.config, args.overrides)
        path = augment_grid(cfg, setup_runtime(cfg.trainer), args.n, args.draws, Path(args.out),
                            not args.no_progress)
    else:
        classes = load_config(args.classes_from).task.classes
        path = submission_grid(args.csv, args.data, classes, args.n, Path(args.out))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
