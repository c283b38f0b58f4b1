"""Train a segmentation model from a config: `python train.py --config configs/demo.yaml`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.cli import add_config_args, require_file, run_main
from utils.errors import UserError


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_args(parser, required=False)
    parser.add_argument("--out", help="run directory (default: runs/<config name>)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue a run from its last.pt (config from the checkpoint unless --config is given)")
    parser.add_argument("--folds", metavar="all|K,K", help="train these folds (or all) into <run dir>/fold<k>/ and "
                        "report mean ± std validation Dice")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a new run in a non-empty run directory, deleting its previous checkpoints "
                        "and metrics (without it such a directory is refused)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    check_arguments(args)  # before the libraries load: a wrong path or flag costs no import time
    from tracking.checks import check_tracking
    from trainer.checkpoint import check_finite, load_checkpoint, nothing_left
    from trainer.rundir import prepare_run_dir, write_run_info
    from utils.config import from_dict, load_config, secret_values

    state = load_checkpoint(args.resume) if args.resume else None
    if args.config:
        cfg = load_config(args.config, args.overrides)
    else:
        cfg = from_dict(state["config"], source=args.resume, overrides=args.overrides)
    check_tracking(cfg)  # a missing tracking package or webhook variable: one line before any work
    from models.factory import check_model  # the model libraries load from here on
    from tasks.registry import build_task
    from tracking.build import build_tracking, tracking_factory
    from trainer.kfold import parse_folds, train_folds
    from trainer.runtime import setup_runtime, shutdown
    from trainer.trainer import Trainer

    build_task(cfg)  # layout, mode and submission fit together: checked before the run folder is made
    if state is not None:
        check_resume_model(state, cfg, args.resume)
        check_finite(state, args.resume)
        done = nothing_left(state, cfg.trainer.epochs, cfg.trainer.early_stop_patience)
        if done:
            print(f"{args.resume}: {done}; nothing to do")
            return 0
    folds = parse_folds(args.folds, cfg.data.n_splits, cfg.data.split) if args.folds else None
    check_model(cfg.model, len(cfg.task.classes))  # a misfit fails before the run folder is touched
    run_dir = Path(args.out) if args.out else (Path(args.resume).parent if args.resume else Path("runs") / cfg.name)
    prepare_run_dir(run_dir, resume=bool(args.resume), overwrite=args.overwrite)
    runtime = setup_runtime(cfg.trainer)
    if runtime.is_main:
        write_run_info(run_dir, sys.argv if argv is None else ["train.py", *argv], secret_values(cfg))
    try:
        if folds:
            # every fold in the store of the runs folder, named <run>/fold<k> and tagged with the run
            train_folds(cfg, run_dir, folds, runtime, not args.no_progress,
                        callbacks_for=tracking_factory(runtime.is_main, run_dir.parent, group=run_dir.name))
        else:
            result = Trainer(cfg, run_dir, runtime, resume=args.resume, progress=not args.no_progress,
                             callbacks=build_tracking(cfg, run_dir, runtime.is_main)).fit()
            if runtime.is_main:
                print(f"best validation {result['metric_title']} {result['best_score']:.4f} after {result['epochs']} "
                      f"epoch(s); checkpoints in {run_dir}")
    finally:
        shutdown(runtime)
    return 0


def check_arguments(args) -> None:
    """The errors that need no library: conflicting flags, a missing config or checkpoint."""
    if args.folds and args.resume:
        raise UserError("--folds and --resume do not go together: resume one fold with --resume <run>/fold<k>/last.pt")
    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite do not go together")
    if not args.config and not args.resume:
        raise UserError("give --config CONFIG (or --resume CHECKPOINT)")
    require_file(args.config, "config file")
    require_file(args.resume, "checkpoint")


def check_resume_model(state: dict, cfg, path: str) -> None:
    """--resume with --config: the checkpoint must hold the config's architecture (checked before any work)."""

    saved = state["config"].get("model", {}) if isinstance(state.get("config"), dict) else {}
    for key in ("arch", "encoder", "in_channels", "params"):
        if key in saved and saved[key] != getattr(cfg.model, key):
            raise UserError(f"{path}: the checkpoint was trained with model.{key}={saved[key]!r}, the config asks for "
                            f"{getattr(cfg.model, key)!r}; resume with the checkpoint's config (omit --config)")


if __name__ == "__main__":
    run_main(main)
