"""What every entry script shares: `--config/--set` arguments, argument checks that run before the heavy
libraries load (importing torch and the model libraries costs seconds of CPU: a wrong path should not), and
one-line errors instead of tracebacks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from utils.errors import UserError


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML config (may inherit others via _base_)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a config value (parsed as YAML); repeatable, e.g. --set optimizer.lr=3e-4")


def require_file(path, what: str) -> None:
    """A file argument (checkpoint, config, CSV) must exist; None (not given) passes."""
    if path is None:
        return
    if Path(path).is_dir():
        raise UserError(f"{path}: is a folder, expected a {what}")
    if not Path(path).is_file():
        raise UserError(f"{path}: {what} not found")


def require_dir(path, what: str) -> None:
    """A folder argument (data root, run folder) must exist; None (not given) passes."""
    if path is None:
        return
    if not Path(path).exists():
        raise UserError(f"{path}: {what} not found")
    if not Path(path).is_dir():
        raise UserError(f"{path}: is a file, expected a {what}")


def check_threshold(value, where: str) -> float:
    """A mask threshold is a finite number strictly between 0 and 1 (0 or 1 gives full or empty masks, NaN empty
    ones); `where` names the flag or file entry in the error."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where}: threshold {value!r} is not a number")
    if not 0.0 < value < 1.0:  # False for NaN too
        raise UserError(f"{where}: threshold {value} must be a number strictly between 0 and 1")
    return float(value)


def check_workers(workers: int, flag: str = "--workers") -> int:
    if workers < 0:
        raise UserError(f"{flag}: must be 0 (decode in the main process) or more, got {workers}")
    return workers


def one_line(error: BaseException) -> str:
    """The message of a UserError, also when a DataLoader worker raised it: PyTorch re-raises it in the main
    process with the worker's whole traceback as its message, whose last line is the original one."""
    text = str(error)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(text.split("\n"))


def run_main(main) -> None:
    """Run `main()`; a UserError becomes `error: <message>` on stderr and exit status 2."""
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:  # the trainer's message says what was kept and how to go on
        print(f"interrupted: {e}" if str(e) else "interrupted", file=sys.stderr)
        sys.exit(130)
