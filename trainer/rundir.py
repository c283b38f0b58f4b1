"""The run directory's life cycle: refuse to mix two runs in one folder, keep metrics.jsonl in step with the
checkpoint a run resumes from, and record what produced the run (git commit, package versions, command line)."""
from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from utils.config import redact
from utils.errors import UserError
from utils.files import os_reason, write_text_atomic

RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl", "config.yaml", "run_info.json", "folds.json")
RUN_FOLDERS = ("wandb", "report")  # the offline wandb run and analyze.py's report of the previous run
PACKAGES = ("torch", "torchvision", "segmentation-models-pytorch", "timm", "numpy", "opencv-python-headless",
            "albumentations", "monai", "scipy")


def prepare_run_dir(run_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """A new run needs an empty (or missing) folder: a non-empty one is refused unless resuming, or `overwrite`
    asks to delete the previous run's files (only those this framework writes, in the folder and fold*/)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir}: exists and is not a folder")
    if resume:
        _remove_temporary_files(run_dir)
    if resume or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return run_dir
    if not overwrite:
        raise UserError(f"{run_dir}: run directory is not empty (a previous run?); continue it with --resume "
                        f"{run_dir / 'last.pt'}, replace it with --overwrite, or choose another --out")
    for folder in [run_dir, *sorted(run_dir.glob("fold*"))]:
        for name in RUN_FILES:
            target = folder / name
            if target.is_file():
                target.unlink(missing_ok=True)  # torchrun: every rank runs this
        for events in folder.glob("events.out.tfevents.*"):  # TensorBoard would mix the old run's curves in
            events.unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(folder / name, ignore_errors=True)
        _remove_temporary_files(folder)
        if folder != run_dir and folder.is_dir() and not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
    return run_dir


def _remove_temporary_files(folder: Path) -> None:
    """`<name>.<pid>.tmp` checkpoints and metrics of a run killed while writing them (utils/files.atomic_path)."""
    for tmp in folder.glob("*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def truncate_metrics(run_dir: str | Path, epochs: int) -> None:
    """Keep the metrics.jsonl records of the first `epochs` epochs (those the resumed checkpoint has seen),
    so that a run killed after writing metrics but before its checkpoint never lists an epoch twice."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut by a kill
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] <= epochs:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(f"{line}\n" for line in kept))
        print(f"{path}: dropped {dropped} record(s) after epoch {epochs}, the epoch resumed from")


def write_run_info(run_dir: str | Path, argv: list[str], secrets: list[str] = ()) -> None:
    """run_info.json: the command line, the git commit of the code (when in a repository) and package versions.
    `secrets` (utils.config.secret_values: a webhook URL given with --set) are redacted from the command line."""
    run_dir = Path(run_dir)
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    command = [sys.executable, *redact(list(argv), list(secrets))]
    info = {"command": command, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(), "host": platform.node(), "git": git_state(), "packages": versions}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{run_dir}: cannot create the run directory ({os_reason(e)})") from None
    write_text_atomic(run_dir / "run_info.json", json.dumps(info, indent=2))


def git_state() -> dict | None:
    """Commit and whether the working tree had uncommitted changes; None outside a repository or without git."""
    code = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=code,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
