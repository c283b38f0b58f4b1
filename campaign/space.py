"""A search space keyed by config paths, validated against the config schema before the first trial.

    model.encoder: {grid: [resnet34, vgg19]}          # every value, once (grid sampler when all keys are grids)
    loss.terms: {choice: {bce_dice: [...], focal: [...]}}  # named values: the names label the trial
    optimizer.lr: {loguniform: [1.0e-5, 1.0e-3]}
    optimizer.weight_decay: {uniform: [0.0, 0.1]}
    trainer.epochs: {int: [10, 40]}

A value of a grid or choice that is not a plain scalar (a list of loss terms, a transform list) is labelled by its
JSON text unless the mapping form names it. Optuna stores the labels as the trial's parameters.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from tasks.registry import build_task
from utils.config import load_config, read_yaml
from utils.errors import ConfigError

KINDS = ("grid", "choice", "loguniform", "uniform", "int")


@dataclass(frozen=True)
class Dimension:
    key: str  # a config path, e.g. optimizer.lr
    kind: str  # one of KINDS
    values: tuple  # grid/choice: the values; ranges: (low, high)
    labels: tuple = ()  # grid/choice: how each value is named in Optuna and in the report

    def suggest(self, trial):
        """Ask Optuna for this key's value in `trial`."""
        if self.kind in ("grid", "choice"):
            return self.values[self.labels.index(trial.suggest_categorical(self.key, list(self.labels)))]
        low, high = self.values
        if self.kind == "int":
            return trial.suggest_int(self.key, low, high)
        return trial.suggest_float(self.key, low, high, log=self.kind == "loguniform")

    def probes(self) -> tuple:
        """The values to check against the schema: every listed value, or both ends of a range."""
        if self.kind == "uniform" or self.kind == "loguniform":
            return tuple(float(v) for v in self.values)
        return self.values

    def describe(self) -> dict:
        if self.kind in ("grid", "choice"):  # labels may be numbers: pairs survive JSON, mapping keys would not
            return {self.kind: [[label, value] for label, value in zip(self.labels, self.values)]}
        return {self.kind: list(self.values)}


@dataclass(frozen=True)
class Space:
    source: str
    dimensions: tuple[Dimension, ...]

    @property
    def keys(self) -> list[str]:
        return [d.key for d in self.dimensions]

    @property
    def all_grid(self) -> bool:
        return all(d.kind == "grid" for d in self.dimensions)

    def grid(self) -> dict[str, list]:
        """The search space of Optuna's GridSampler: every key's labels."""
        return {d.key: list(d.labels) for d in self.dimensions}

    def grid_size(self) -> int:
        return math.prod(len(d.labels) for d in self.dimensions)

    def overrides(self, trial) -> list[str]:
        """`--set` items for this trial's values (JSON is valid YAML, so the config loader reads them back)."""
        return [f"{d.key}={json.dumps(d.suggest(trial))}" for d in self.dimensions]

    def describe(self) -> dict:
        """What identifies the space; stored with the study so that another space is refused."""
        return {d.key: d.describe() for d in self.dimensions}


def load_space(path: str | Path, base_config: str | Path, overrides: list[str] = ()) -> Space:
    """Read and validate SPACE.yaml: each key and each value is built into the base config once."""
    raw = read_yaml(path)
    if not raw:
        raise ConfigError(f"{path}: the space is empty (map config keys to {{grid: [...]}}, {{loguniform: ...}}, ...)")
    build_task(load_config(base_config, overrides))  # the base itself first, so that its own errors name it
    dimensions = tuple(_dimension(str(path), str(key), spec) for key, spec in raw.items())
    space = Space(str(path), dimensions)
    for dim in dimensions:
        for value in dim.probes():
            _check_value(space, dim, value, base_config, overrides)
    return space


def _dimension(source: str, key: str, spec) -> Dimension:
    where = f"{source}: {key}"
    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(f"{where}: expected one of {', '.join(f'{{{k}: ...}}' for k in KINDS)}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if isinstance(values, dict):
            labels, values = tuple(str(k) for k in values), tuple(values.values())
        elif isinstance(values, list):
            values = tuple(values)
            labels = tuple(v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v, sort_keys=True)
                           for v in values)
        else:
            raise ConfigError(f"{where}: {kind} takes a list (or a mapping of names to values), got {values!r}")
        if not values:
            raise ConfigError(f"{where}: the {kind} is empty")
        if len(set(map(repr, labels))) != len(labels):
            raise ConfigError(f"{where}: the {kind} lists a value twice")
        return Dimension(key, kind, values, labels)
    if (not isinstance(values, list) or len(values) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        raise ConfigError(f"{where}: {kind} takes [low, high] numbers, got {values!r}")
    low, high = values
    if kind == "int" and not (isinstance(low, int) and isinstance(high, int)):
        raise ConfigError(f"{where}: int takes [low, high] integers, got {values!r}")
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high, got {values!r}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs a positive low end, got {low}")
    return Dimension(key, kind, (low, high))


def _check_value(space: Space, dim: Dimension, value, base_config, overrides) -> None:
    """Build the config with `dim.key` set to `value`; a schema error names the space file and the key."""
    try:
        build_task(load_config(base_config, list(overrides) + [f"{dim.key}={json.dumps(value)}"]))
    except ConfigError as e:
        message = str(e).removeprefix(f"{base_config}: ")
        raise ConfigError(f"{space.source}: {dim.key}={json.dumps(value)}: {message}") from None
