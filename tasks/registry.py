"""The task registry: layouts and submissions by name (or the user's own as a plug-in), and build_task, which
checks that a config's layout, mode, submission and model input fit together."""
from __future__ import annotations

from dataclasses import dataclass

from modes import build_mode
from tasks.coco.layout import CocoLayout
from tasks.coco.submission import TrashSubmission
from tasks.folders.layout import FoldersLayout
from tasks.folders.submission import MasksSubmission
from tasks.handbone.layout import HandboneLayout
from tasks.handbone.submission import HandboneSubmission
from utils.config import Config
from utils.errors import ConfigError
from utils.plugins import is_plugin, load_plugin

LAYOUTS = {"handbone": HandboneLayout, "coco": CocoLayout, "folders": FoldersLayout}
SUBMISSIONS = {"handbone": HandboneSubmission, "trash": TrashSubmission, "masks": MasksSubmission}


@dataclass
class Task:
    layout: object  # the on-disk layout: samples, splits, reading, rasterizing, pseudo-labels
    mode: object  # activation, losses' mode, metric (modes/)
    submission: object  # the file a prediction is written as, read and validated

    @property
    def classes(self) -> list[str]:
        return self.layout.classes

    @property
    def ignore_index(self) -> int | None:
        """The void label of the layout's label maps (None: its labels hold no void)."""
        return self.layout.ignore_index


def build_layout(task):
    """The layout of a TaskConfig: a built-in by name, or the user's own class (called with the TaskConfig)."""
    if is_plugin(task.format):
        return load_plugin(task.format, "task.format")(task)
    if task.format not in LAYOUTS:
        raise ConfigError(f"task.format: unknown layout {task.format!r} (choose from {', '.join(LAYOUTS)}, or give "
                          "your own as 'package.module:Name' or 'path/file.py:Name')")
    return LAYOUTS[task.format](task)


def build_task(cfg: Config) -> Task:
    """The task of a config, with the checks that need the layout and mode (a layout may be a plug-in, so the
    schema in utils/config.py cannot know them): every consumer builds it before any data work."""
    task = cfg.task
    layout, mode = build_layout(task), build_mode(task.mode)
    if mode.name not in layout.modes or layout.label_kind != mode.label_kind:
        raise ConfigError(f"task.mode: {task.mode!r} does not fit task.format {task.format!r} (its labels are "
                          f"{'bit planes' if layout.label_kind == 'bits' else 'one label map'}; use "
                          f"{' or '.join(layout.modes)})")
    if cfg.data.split not in layout.splits:
        raise ConfigError(f"data.split: task.format {task.format!r} splits by {', '.join(layout.splits)}, "
                          f"not {cfg.data.split!r}")
    if cfg.model.in_channels != layout.channels:
        raise ConfigError(f"model.in_channels: task.format {task.format!r} gives {layout.channels}-channel images, "
                          f"got {cfg.model.in_channels}")
    if mode.name == "multiclass" and len(task.classes) < 2:
        raise ConfigError("task.classes: multiclass needs the background and at least one class")
    if mode.name == "binary" and len(task.classes) != 1:
        raise ConfigError(f"task.classes: binary mode segments one foreground class, got {len(task.classes)} "
                          "(name it alone, e.g. [lesion]; several classes: multilabel or multiclass)")
    if cfg.transforms.copy_paste is not None and mode.name != "multiclass":
        raise ConfigError("transforms.copy_paste: works on label maps (task.mode: multiclass)")
    if cfg.predict.crf is not None and mode.name != "multiclass":
        raise ConfigError("predict.crf: DenseCRF refines softmax outputs (task.mode: multiclass)")
    name = task.submission or layout.submission
    return Task(layout, mode, build_submission(name, layout) if name else NoSubmission(layout))


def build_submission(name: str, layout):
    """A built-in submission by name (for the layouts whose test set it reads), or the user's own class (called
    with the layout)."""
    if is_plugin(name):
        return load_plugin(name, "task.submission")(layout)
    if name not in SUBMISSIONS:
        raise ConfigError(f"task.submission: unknown submission {name!r} (choose from {', '.join(SUBMISSIONS)})")
    kind = SUBMISSIONS[name]
    if layout.name not in kind.layouts:
        raise ConfigError(f"task.submission: {name!r} is written for task.format {' or '.join(kind.layouts)}, "
                          f"not {layout.name!r}")
    return kind(layout)


class NoSubmission:
    """The submission of a layout that names none (a plug-in that trains and validates only): any use of it is a
    one-line error."""

    def __init__(self, layout):
        self.layout_name = layout.name

    def __getattr__(self, attr):
        if attr.startswith("__"):  # copy, pickle and friends look for optional methods
            raise AttributeError(attr)
        raise ConfigError(f"task.submission: task.format {self.layout_name!r} names no submission; give one written "
                          "for it, or your own as 'package.module:Name'")
