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
from utils.files import check_output_file


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
    submission.add_argument("--csv", required=True, help="submission file of the task (e.g. image_name,class,rle)")
    submission.add_argument("--data", required=True, metavar="ROOT", help="dataset root with the test images")
    submission.add_argument("--classes-from", default="configs/_base_/hand_bones.yaml", metavar="CONFIG",
                            help="config of the task the submission is written for: classes, layout and format "
                            "(default: the hand-bone task)")
    submission.add_argument("--n", type=int, default=8, help="images (default 8)")
    submission.add_argument("--out", default="submission.png", help="output PNG (default submission.png)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.n < 1 or getattr(args, "draws", 1) < 1:
        raise UserError("--n and --draws must be at least 1")
    check_output_file(args.out)  # before the work: a folder, a missing folder (the write itself is atomic_path's)
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
        from tasks.registry import build_task

        task = build_task(load_config(args.classes_from))
        path = submission_grid(args.csv, args.data, task, args.n, Path(args.out))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_main(main)
