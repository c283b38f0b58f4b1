"""analyze.py --run: from a run directory to its report (the steps, each checked; the figures in report.py)."""
from __future__ import annotations

import sys
from pathlib import Path

from analysis.evaluate import analyze_fold
from analysis.multiclass import analyze_fold_multiclass
from analysis.report import write_report
from analysis.report_multiclass import write_report_multiclass
from analysis.run import open_run
from data.pipeline import prepare_fold
from trainer.checkpoint import load_checkpoint
from trainer.inference import load_member
from trainer.runtime import setup_runtime
from utils.files import check_output_folder

MISMATCH = 0.02  # recomputed vs logged best Dice beyond this: warn that data or checkpoint may not be the run's


def analyze_run(run_dir: str, checkpoint: str | None = None, data_root: str | None = None, k_worst: int = 6,
                cleansing: int = 6, progress: bool = True) -> Path:
    run = open_run(run_dir, data_root)
    check_output_folder(run.folder / "report", flag="")  # before the analysis, not after it
    path = Path(checkpoint) if checkpoint else run.folder / "best.pt"
    state = load_checkpoint(path)
    runtime = setup_runtime(run.cfg.trainer)
    member = load_member(path, run.cfg, runtime, state=state)
    data = prepare_fold(run.cfg, member.task.layout, runtime, progress)
    if member.task.mode.label_kind == "map":  # one label per pixel: argmax maps, mIoU
        return _analyze_multiclass(run, member, data, path, checkpoint is None, k_worst, cleansing, progress)
    analysis = analyze_fold(member, data, runtime, k_worst, cleansing, progress)
    recomputed, best = float(analysis.dice_matrix.mean()), run.best
    if checkpoint is None and best is not None and abs(recomputed - best["val_dice"]) > MISMATCH:
        print(f"warning: {path}: recomputed validation Dice {recomputed:.4f} differs from the best in metrics.jsonl "
              f"({best['val_dice']:.4f}): is {run.cfg.data.root} the run's data?", file=sys.stderr)
    return write_report(run, analysis, path, run.folder / "report")


def _analyze_multiclass(run, member, data, path: Path, own_checkpoint: bool, k_worst: int, cleansing: int,
                        progress: bool) -> Path:
    analysis = analyze_fold_multiclass(member, data, k_worst, cleansing, progress)
    recomputed, best = analysis.scores()[0], run.best
    if own_checkpoint and best is not None and abs(recomputed - best["val_miou"]) > MISMATCH:
        print(f"warning: {path}: recomputed validation mIoU {recomputed:.4f} differs from the best in metrics.jsonl "
              f"({best['val_miou']:.4f}): is {run.cfg.data.root} the run's data?", file=sys.stderr)
    return write_report_multiclass(run, analysis, path, run.folder / "report")
