"""Combine models into one submission.

Soft voting (probabilities averaged at full resolution, then thresholded):
    python ensemble.py --checkpoints a.pt b.pt c.pt [--weights 1 1 2] --out sub.csv
    python ensemble.py --probs probs_a/ probs_b/ --data ROOT --out sub.csv      (saved by inference.py --save-probs)
A run folder given to --checkpoints stands for its fold checkpoints (<run>/fold*/best.pt) or its best.pt; an .onnx
file from export.py is a member like a checkpoint (run by ONNX Runtime with the config stored in it).
Hard voting (a pixel is kept where at least --min-votes submissions agree):
    python ensemble.py --csvs a.csv b.csv c.csv --min-votes 2 --data ROOT --out sub.csv
Multiclass (trash) submissions: soft voting averages softmax probabilities before the argmax; hard voting takes
each pixel's majority label (--config names the task):
    python ensemble.py --csvs a.csv b.csv c.csv --config configs/trash_demo.yaml --out sub.csv
Mask folders (task.submission masks) are hard-voted the same way, into a new folder:
    python ensemble.py --csvs masks_a/ masks_b/ masks_c/ --config configs/voc_demo.yaml --data ROOT --out voted/
The best submission by cross-validation (members, weights, thresholds, post-processing chosen on out-of-fold
predictions of k-fold runs of the same folds), then applied to the test set:
    python ensemble.py --select runs/a runs/b --out plan.yaml      (also plan.md, plan.html: the out-of-fold table)
    python ensemble.py --plan plan.yaml [--data ROOT] --out sub.csv
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from utils.cli import check_threshold, check_workers, require_dir, require_file, run_main
from utils.errors import UserError
from utils.files import check_output_file


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", default=[], metavar="PT", help="checkpoints, run folders or .onnx files")
    p.add_argument("--probs", nargs="+", default=[], metavar="DIR", help="probability folders from --save-probs")
    p.add_argument("--weights", nargs="+", type=float, help="one weight per checkpoint, then per probs folder")
    p.add_argument("--csvs", nargs="+", default=[], metavar="SUBMISSION", help="submissions to hard-vote (CSV files, "
                   "or mask folders)")
    p.add_argument("--min-votes", type=int, help="with --csvs: submissions that must agree on a pixel")
    p.add_argument("--config", help="with --csvs: the task's config (default: hand bones; a trash config votes "
                   "per-pixel majority labels)")
    p.add_argument("--data", help="dataset root with test/DCM (default: data.root of the first checkpoint)")
    p.add_argument("--select", nargs="+", default=[], metavar="RUN", help="k-fold run folders to choose a plan from "
                   "on their out-of-fold predictions (--out PLAN.yaml)")
    p.add_argument("--plan", metavar="YAML", help="apply a plan written by --select to the test set")
    p.add_argument("--steps", type=int, default=10, help="with --select: at most this many members added (default 10)")
    p.add_argument("--min-sizes", nargs="+", type=int, metavar="N", help="with --select: component sizes in pixels "
                   "to try removing (default: 0.01%%, 0.05%%, 0.2%% and 1%% of the median image area)")
    p.add_argument("--no-crf", action="store_true", help="with --select (multiclass): do not try DenseCRF")
    p.add_argument("--out", help="a CSV file (default: submission.csv), a new folder for mask submissions, or with "
                   "--select the plan YAML")
    p.add_argument("--tta", choices=["none", "hflip"], help="TTA for every model (default: each model's predict.tta)")
    p.add_argument("--threshold", type=float, default=0.5, help="one threshold for every class (default: 0.5)")
    p.add_argument("--thresholds", metavar="JSON", help="per-class thresholds (from inference.py --tune-thresholds)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value of every checkpoint")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # every argument is checked before any model is loaded, and before the libraries load (seconds of CPU)
    check_workers(args.workers)
    if args.select or args.plan:
        return selection(args)
    args.out = args.out or "submission.csv"
    if not Path(args.out).is_dir():  # a folder: the task's submission tells if it may be (mask folders)
        check_output_file(args.out)
    check_threshold(args.threshold, "--threshold")
    if args.weights and not all(math.isfinite(w) for w in args.weights):
        raise UserError("--weights must be finite numbers")
    for path in args.checkpoints:  # a run folder is expanded to its best.pt files once the libraries load
        if not Path(path).is_dir():
            require_file(path, "checkpoint")
    for path in args.csvs:
        if not Path(path).is_dir():  # a folder is a mask submission, checked by its task
            require_file(path, "submission file")
    for path in args.probs:
        require_dir(path, "probability folder")
    require_file(args.config, "config file")
    require_file(args.thresholds, "thresholds file")
    require_dir(args.data, "data root")

    if args.csvs:
        if args.checkpoints or args.probs:
            raise UserError("--csvs (hard voting) cannot be mixed with --checkpoints or --probs")
        return hard_voting(args)
    if not args.checkpoints and not args.probs:
        raise UserError("give --checkpoints, --probs or --csvs")
    return soft_voting(args)


def soft_voting(args) -> int:
    from tasks.registry import build_task
    from trainer.inference import (
        check_members,
        expand_checkpoints,
        load_members,
        load_probs_member,
        parse_thresholds,
        write_submission,
    )
    from trainer.runtime import setup_runtime
    from utils.config import TrainerConfig

    checkpoints = expand_checkpoints(args.checkpoints)
    n = len(checkpoints) + len(args.probs)
    weights = args.weights or [1.0] * n
    if len(weights) != n:
        raise UserError(f"--weights: {len(weights)} given for {n} models ({len(checkpoints)} checkpoints, "
                        f"{len(args.probs)} probability folders)")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError("--weights must be non-negative with a positive sum")
    if not checkpoints and not args.data:
        raise UserError("--data ROOT is needed when only --probs are given")
    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    members, runtime = load_members(checkpoints, weights[:len(checkpoints)], overrides, args.tta)
    runtime = runtime or setup_runtime(TrainerConfig())
    root = args.data or members[0].cfg.data.root
    members += [load_probs_member(d, w) for d, w in zip(args.probs, weights[len(checkpoints):])]
    classes = check_members(members)
    thresholds = parse_thresholds(args.threshold, args.thresholds, classes)
    task = members[0].task if checkpoints else build_task(_config(args.config))
    task.submission.check_out(args.out)
    task.submission.test_samples(root)  # the test set --check expects: found, not empty, names unique
    count = write_submission(members, task, root, args.out, runtime, thresholds=thresholds,
                             num_workers=args.workers, progress=not args.no_progress)
    print(f"wrote {args.out}: {count} images x {len(classes)} classes, soft vote of {n} models")
    return 0


def selection(args) -> int:
    """--select RUN ... --out PLAN.yaml, or --plan PLAN.yaml --out SUB: arguments checked before torch loads."""
    others = [flag for flag, given in (("--select", args.select), ("--plan", args.plan), ("--checkpoints",
              args.checkpoints), ("--probs", args.probs), ("--csvs", args.csvs), ("--weights", args.weights),
              ("--thresholds", args.thresholds), ("--tta", args.tta), ("--min-votes", args.min_votes is not None),
              ("--config", args.config)) if given]
    if len(others) > 1:
        raise UserError(f"{others[0]} cannot be combined with {', '.join(others[1:])}")
    if args.select:
        if args.data:
            raise UserError("--data names the test set of --plan; --select reads each run's own data.root "
                            "(--set data.root=ROOT if the training data moved)")
        if not args.out:
            raise UserError("--select needs --out PLAN.yaml")
        if Path(args.out).suffix not in (".yaml", ".yml"):
            raise UserError(f"--out {args.out}: a plan is a YAML file (PLAN.yaml); its tables go beside it as .md "
                            "and .html")
        check_output_file(args.out)
        if args.steps < 1:
            raise UserError(f"--steps: must be at least 1, got {args.steps}")
        if args.min_sizes and min(args.min_sizes) < 2:
            raise UserError("--min-sizes: components of fewer than 2 pixels cannot be removed; give sizes >= 2")
        from selection.plan import make_plan
        from selection.table import text

        plan = make_plan(args.select, args.out, args.steps, args.min_sizes, not args.no_crf, args.overrides,
                         args.workers, not args.no_progress)
        print(text(plan))
        print(f"wrote {args.out} (and its table as {Path(args.out).with_suffix('.md')}, "
              f"{Path(args.out).with_suffix('.html')}): out-of-fold {plan['out_of_fold']['metric']} "
              f"{plan['out_of_fold']['score']:.4f}")
        return 0
    require_file(args.plan, "plan")
    require_dir(args.data, "data root")
    args.out = args.out or "submission.csv"
    check_output_file(args.out)
    from selection.plan import apply_plan

    print(apply_plan(args.plan, args.out, args.data, args.overrides, args.workers, not args.no_progress))
    return 0


def hard_voting(args) -> int:
    from tasks.registry import build_task

    submission = build_task(_config(args.config)).submission
    submission.check_out(args.out)
    print(submission.hard_vote(args.csvs, args.min_votes, args.out, args.data))
    return 0


def _config(config: str | None):
    """--config, or the hand-bone task's base when none is given."""
    from utils.config import load_config

    return load_config(config or Path(__file__).parent / "configs" / "_base_" / "hand_bones.yaml")


if __name__ == "__main__":
    run_main(main)
