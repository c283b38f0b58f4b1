"""Write the competition submission from a checkpoint or an ONNX file from export.py:
`python inference.py --checkpoint runs/demo/best.pt --out submission.csv` (or `--checkpoint model.onnx`: run by
ONNX Runtime with the config and per-class thresholds stored in the file).

The output is the task's submission (task.submission): the hand-bone RLE rows, the trash competition's
`image_id,PredictionString` CSV (then `--save-masks DIR` also writes label-map PNGs), or for image and mask folders
a new folder of PNG masks, one per test image in the training masks' encoding (`--out DIR`).
Also: `--tune-thresholds FILE` picks per-class thresholds on the checkpoint's validation fold (multilabel), and
`--check SUBMISSION` validates any submission against a test folder (`--config` names the task; without it a
CSV's header tells: hand bones or trash; a mask folder needs it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from utils.cli import check_threshold, check_workers, require_dir, require_file, run_main
from utils.errors import UserError
from utils.files import check_new_folder, check_output_file, check_output_folder

BASE_CONFIGS = Path(__file__).parent / "configs" / "_base_"
# a submission's header -> the task config that validates it when --check is given no --config
SUBMISSION_HEADERS = {("image_name", "class", "rle"): BASE_CONFIGS / "hand_bones.yaml",
                      ("image_id", "PredictionString"): BASE_CONFIGS / "trash.yaml"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a best.pt / last.pt written by train.py, or a model.onnx written by export.py")
    p.add_argument("--config", help="use this config instead of the one stored in the checkpoint")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value, as in train.py (e.g. --set predict.mode=sliding)")
    p.add_argument("--data", help="dataset root with the test images (default: data.root of the config)")
    p.add_argument("--out", default="submission.csv", help="the submission to write: a CSV file, or a new folder for "
                   "task.submission masks (default: submission.csv)")
    p.add_argument("--tta", choices=["none", "hflip"], help="test-time augmentation (default: predict.tta)")
    p.add_argument("--threshold", type=float, help="one threshold for every class (default: trainer.threshold)")
    p.add_argument("--thresholds", metavar="JSON", help="per-class thresholds written by --tune-thresholds")
    p.add_argument("--save-probs", metavar="DIR", help="also save each image's probability maps (uint8, compressed)")
    p.add_argument("--save-masks", metavar="DIR", help="trash submission: also write each test image's label map at "
                   "its original size as an 8-bit PNG named after the image, into a new (or empty) folder")
    p.add_argument("--tune-thresholds", metavar="JSON", help="instead of predicting the test set, pick per-class "
                   "thresholds on the checkpoint's validation fold and save them")
    p.add_argument("--check", metavar="SUBMISSION", help="only validate this submission (a CSV, or a mask folder) "
                   "against --data (or the config's root)")
    p.add_argument("--workers", type=int, default=2, help="image decoding processes (default: 2)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_arguments(args)  # before the libraries load: a wrong path or flag costs no import time
    if args.check and not args.checkpoint:
        return check(args.check, args.data, args.config)
    from models.onnx_model import stored_thresholds
    from tasks.registry import build_task
    from trainer.inference import is_onnx, load_member, member_config, parse_thresholds, write_submission
    from trainer.runtime import setup_runtime

    overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
    from trainer.checkpoint import load_checkpoint

    state = None if is_onnx(args.checkpoint) else load_checkpoint(args.checkpoint)
    cfg = member_config(args.checkpoint, args.config, overrides, args.tta, state)
    task = build_task(cfg)
    if not args.tune_thresholds:
        task.submission.check_out(args.out)  # a CSV file or a new folder, by the submission
    threshold = cfg.trainer.threshold if args.threshold is None else args.threshold
    thresholds = None if args.tune_thresholds else parse_thresholds(threshold, args.thresholds, cfg.task.classes)
    if thresholds is not None and args.threshold is None and not args.thresholds and is_onnx(args.checkpoint):
        stored = stored_thresholds(args.checkpoint, cfg.task.classes)  # the file's own, unless flags say otherwise
        thresholds = thresholds if stored is None else stored
    if not args.tune_thresholds:
        task.submission.test_samples(cfg.data.root)  # the test set --check expects, before the model is loaded
    runtime = setup_runtime(cfg.trainer)
    member = load_member(args.checkpoint, cfg, runtime, state=state)
    if args.tune_thresholds:
        if not task.mode.thresholded:
            raise UserError(f"--tune-thresholds: task.mode {cfg.task.mode} predicts by argmax, without thresholds")
        from trainer.thresholds import tune_thresholds
        from utils.files import write_text_atomic
        result = tune_thresholds(member, runtime, progress=not args.no_progress)
        write_text_atomic(args.tune_thresholds, json.dumps(result, indent=2))
        print(f"validation Dice {result['val_dice_at_default']:.4f} at threshold {cfg.trainer.threshold}, "
              f"{result['val_dice']:.4f} with per-class thresholds ({result['images']} images); "
              f"saved to {args.tune_thresholds}")
        return 0
    n = write_submission([member], task, cfg.data.root, args.out, runtime, thresholds=thresholds,
                         save_probs=args.save_probs, save_masks=args.save_masks, num_workers=args.workers,
                         progress=not args.no_progress)
    print(f"wrote {args.out}: {n} images x {len(cfg.task.classes)} classes")
    return 0


def check_arguments(args) -> None:
    """The errors that need no library: missing files and folders, conflicting or out-of-range flags."""
    if not args.checkpoint and not args.check:
        raise UserError("give --checkpoint CHECKPOINT (or --check CSV --data ROOT)")
    if args.threshold is not None and args.thresholds:
        raise UserError("give either --threshold or --thresholds, not both")
    if args.threshold is not None:
        check_threshold(args.threshold, "--threshold")
    onnx = Path(args.checkpoint or "").suffix.lower() == ".onnx"  # as trainer.inference.is_onnx tells
    model_file = "ONNX file" if onnx else "checkpoint"
    for path, what in ((args.checkpoint, model_file), (args.config, "config file"),
                       (args.thresholds, "thresholds file")):
        require_file(path, what)
    if args.check and not Path(args.check).is_dir():  # a CSV; a folder is a mask submission
        require_file(args.check, "submission file")
    require_dir(args.data, "data root")
    check_workers(args.workers)
    if args.save_probs and Path(args.save_probs).is_file():
        raise UserError(f"--save-probs {args.save_probs}: is a file, expected a folder")
    if args.checkpoint and args.tune_thresholds:
        check_output_file(args.tune_thresholds, "--tune-thresholds")
    elif args.checkpoint and not Path(args.out).is_dir():  # a folder: the task's submission tells if it may be
        check_output_file(args.out)
    if args.checkpoint and args.save_masks:  # built under a temporary name, renamed when complete: new or empty
        check_new_folder(check_output_folder(args.save_masks, "--save-masks"), "--save-masks")


def submission_config(csv_path) -> Path:
    """The task config of a submission, told by its header (SUBMISSION_HEADERS); another header is an error."""
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            first = f.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{csv_path}: cannot read the header ({type(e).__name__}: {e})") from None
    header = tuple(cell.strip() for cell in first.strip().split(","))
    if header not in SUBMISSION_HEADERS:
        known = " or ".join(",".join(h) for h in SUBMISSION_HEADERS)
        raise UserError(f"{csv_path}: header {first.strip()[:80]!r} is not a known submission ({known}); "
                        f"give --config <the task's config>")
    return SUBMISSION_HEADERS[header]


def check(csv_path, data_root, config) -> int:
    from tasks.registry import build_task
    from utils.config import load_config

    if config is None and Path(csv_path).is_dir():
        raise UserError(f"{csv_path}: a mask folder; give --config <the task's config> to check it")
    cfg = load_config(config or submission_config(csv_path))
    root = data_root or cfg.data.root
    if not root:
        raise UserError("give --data ROOT for --check")
    require_dir(root, "data root")
    problems = build_task(cfg).submission.validate(csv_path, root)
    for line in problems:
        print(line)
    if not problems:
        print(f"OK: {csv_path} matches the test images of {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    run_main(main)
