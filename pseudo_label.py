"""Pseudo-label the test set with one model or a soft-voted ensemble, in the competition's training layout:
`python pseudo_label.py --checkpoints a.pt [b.pt ...] [--weights 1 2] --data ROOT --out DIR [--min-confidence 0.9]`.

Every PNG under ROOT/test/DCM/IDxxx/ is predicted by each checkpoint at its own input size and TTA, upsampled to
the image's own size and averaged with the weights (as ensemble.py does). An image is kept when its confidence,
the mean over classes and pixels of max(p, 1 - p), is at least --min-confidence; its masks (p > --threshold)
become one polygon per class (the largest connected component's outline; empty classes get none). DIR receives
train/DCM/IDxxx/<name>.png (hard links, or copies across file systems), train/outputs_json/IDxxx/<name>.json and
pseudo_labels.json (settings and every image's confidence). DIR is built under a temporary name and renamed at
the end; an existing non-empty DIR is refused. When no image is kept, DIR is not created and the exit status is 1.
Train on it with `data.pseudo_roots: [DIR]`.

Multiclass COCO tasks (task.format coco): the images of ROOT/test.json are predicted the same way, the confidence
is the mean winning softmax probability, and --out names a new COCO JSON (same schema, file names relative to
ROOT, one polygon per connected component of each predicted class; --threshold does not apply). Train on it with
`data.pseudo_roots: [FILE.json]`.
"""
from __future__ import annotations

import argparse
import math
import statistics

from utils.cli import run_main

LISTED = 10  # skipped images and empty classes are named when there are at most this many


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", nargs="+", required=True, metavar="PT",
                   help="checkpoints, or run folders (standing for their fold*/best.pt or best.pt)")
    p.add_argument("--weights", nargs="+", type=float, help="one weight per checkpoint (default: equal)")
    p.add_argument("--data", help="dataset root holding test/DCM/IDxxx/*.png "
                   "(default: data.root of the first checkpoint)")
    p.add_argument("--out", required=True, metavar="DIR", help="new folder to write the pseudo-labels into")
    p.add_argument("--min-confidence", type=float, default=0.9,
                   help="keep images whose mean max(p, 1 - p) is at least this (default: 0.9)")
    p.add_argument("--threshold", type=float, default=0.5, help="mask threshold for every class (default: 0.5)")
    p.add_argument("--tta", choices=["none", "hflip"], help="TTA for every model (default: each model's predict.tta)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value of every checkpoint")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default: 2)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from pathlib import Path

    from utils.cli import check_threshold, check_workers, require_dir, require_file
    from utils.errors import UserError
    from utils.files import check_new_folder, check_output_folder

    # the checks that need no model come first, before the libraries load (importing them takes seconds)
    check_threshold(args.threshold, "--threshold")
    check_workers(args.workers)
    if math.isnan(args.min_confidence):  # above 1 is allowed: it keeps nothing, by design
        raise UserError("--min-confidence: nan is not a number")
    if args.weights and not all(math.isfinite(w) for w in args.weights):
        raise UserError("--weights must be finite numbers")
    for path in args.checkpoints:  # a run folder is expanded to its best.pt files once the libraries load
        if not Path(path).is_dir():
            require_file(path, "checkpoint")
    require_dir(args.data, "data root")
    check_new_folder(check_output_folder(args.out))  # the layout's own rule follows once the checkpoint names it

    from trainer.inference import check_members, expand_checkpoints, iter_full_size_probs, load_members

    checkpoints = expand_checkpoints(args.checkpoints)

    weights = args.weights or [1.0] * len(checkpoints)
    if len(weights) != len(checkpoints):
        raise UserError(f"--weights: {len(weights)} given for {len(checkpoints)} checkpoints")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError("--weights must be non-negative with a positive sum")
    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    members, runtime = load_members(checkpoints, weights, overrides, args.tta)
    check_members(members)
    layout = members[0].task.layout  # hand-bone folders, a COCO JSON, ...
    out = layout.check_pseudo_out(args.out)
    root = args.data or members[0].cfg.data.root
    if not root:
        raise UserError("give --data ROOT (the checkpoint's config has no data.root)")
    samples = layout.test_samples(root)
    info = {"data": str(root), "checkpoints": [str(c) for c in checkpoints], "weights": weights,
            "tta": [m.cfg.predict.tta for m in members]}
    predictions = iter_full_size_probs(members, samples, runtime, layout.read_image, args.workers,
                                       not args.no_progress, desc="pseudo-label")
    report, summary = layout.write_pseudo_labels(predictions, out, args.threshold, args.min_confidence, info)

    scores = list(report.confidences.values())
    print(f"kept {len(report.kept)} of {len(scores)} test images with confidence >= {args.min_confidence} "
          f"(confidence min {min(scores):.4f}, median {statistics.median(scores):.4f}, max {max(scores):.4f})")
    if report.skipped:
        named = ", ".join(f"{k} ({report.confidences[k]:.4f})" for k in report.skipped[:LISTED])
        more = f", ... ({len(report.skipped) - LISTED} more)" if len(report.skipped) > LISTED else ""
        print(f"skipped {len(report.skipped)}: {named}{more}")
    if report.empty_count:
        pairs = [f"{k}:{c}" for k, names in report.empty.items() for c in names]
        named = f": {', '.join(pairs)}" if len(pairs) <= LISTED else " (listed in pseudo_labels.json)"
        print(f"warning: {len(pairs)} empty class mask(s) got no annotation{named}")
    if not report.written:
        print(f"nothing written: no image reached --min-confidence {args.min_confidence}; {out} was not created")
        return 1
    print(summary)
    return 0


if __name__ == "__main__":
    run_main(main)
