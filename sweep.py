"""Run a campaign of training runs on Optuna: a sweep over a space, or a queue of whole configs.

    python sweep.py --config configs/demo.yaml --space configs/sweeps/synthetic/encoders.yaml --workers 2
    python sweep.py --queue a.yaml b.yaml --storage postgresql://user@host/db    # any machine joins with the same
    python sweep.py --report demo-encoders                                       # the table, sorted by val Dice
"""
from __future__ import annotations

import argparse

from utils.cli import add_config_args, require_file, run_main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, required=False)
    parser.add_argument("--space", help="SPACE.yaml: config keys mapped to {grid|choice|loguniform|uniform|int: ...}")
    parser.add_argument("--queue", nargs="+", metavar="CONFIG", help="enqueue these whole configs, run in order")
    parser.add_argument("--study", help="study name (default: <config>-<space>, or the first queued file's name)")
    parser.add_argument("--storage", help="Optuna storage: sqlite:///f.db, postgresql://..., mysql://... or a journal "
                        "file path (default: sqlite:///runs/<study>/study.db)")
    parser.add_argument("--out", help="campaign folder for trial-<n>/ and the report (default: runs/<study>)")
    parser.add_argument("--trials", type=int, help="trials to finish in all (sampled spaces; a grid runs each point)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    group.add_argument("--devices", help="GPU ids, e.g. 0,1,2,3: one worker process per GPU")
    parser.add_argument("--prune", choices=["none", "median"], default="none",
                        help="stop trials whose validation Dice is below the median of earlier trials at that epoch")
    parser.add_argument("--heartbeat", type=int, default=60, metavar="SECONDS",
                        help="database storages: a trial whose worker is silent this long x2 is failed and retried "
                        "once (0: off)")
    parser.add_argument("--grace", type=int, metavar="SECONDS", help="silence before a trial counts as dead "
                        "(default: twice --heartbeat)")
    parser.add_argument("--report", metavar="STUDY", help="write runs/<STUDY>/report.{md,csv,html} and plots, and "
                        "exit")
    parser.add_argument("--progress", action="store_true", help="progress bars in trials (one worker)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for path, what in [(args.config, "config file"), (args.space, "space file"),
                       *((q, "queued config") for q in args.queue or [])]:
        require_file(path, what)  # before the campaign's libraries load
    if args.report:
        from campaign.report import write_report

        write_report(args.report, args.storage, args.out)
        return 0
    from campaign.run import start

    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    return start(args.study, args.config, args.space, args.queue, args.overrides, args.storage, args.out, args.trials,
                 args.workers, devices, args.heartbeat, args.grace, args.prune, args.progress)


if __name__ == "__main__":
    run_main(main)
