"""One typed config schema for every option, loaded from YAML with `_base_` inheritance and `--set` overrides.

The dataclasses below are the single source of truth: every key a YAML file may hold is a field here, with its
type and default. Loading merges the files, applies the overrides, then validates the whole tree before any work
starts, so that a typo is a one-line error naming the full key path (and the closest valid key).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from utils.errors import ConfigError
from utils.files import os_reason, write_text_atomic


@dataclass
class FoldersConfig:
    """Image and mask folders (`task.format: folders`, tasks/folders/). A key left null takes the preset's value,
    else the default named beside it; paths are relative to data.root, `{split}` in them is a split's name."""
    preset: Literal["voc", "mmseg"] | None = None  # voc: Pascal VOC 2012's folders and lists; mmseg: img_dir/ann_dir
    images: str | None = None  # default images
    masks: str | None = None  # default masks (multilabel: masks/<class>/<stem>.png)
    image_suffix: str | None = None  # the end of an image's name after its stem; null: .png .jpg .jpeg .bmp .tif .tiff
    mask_suffix: str | None = None  # default .png
    split_lists: str | None = None  # a folder of <split>.txt, one stem per line; null: none
    train_split: str | None = None  # default train
    val_split: str | None = None  # default val
    test_split: str | None = None  # default test
    channels: Literal[1, 3] = 3  # images read as grayscale (1) or RGB (3)
    palette: list[list[int]] | None = None  # [r, g, b] per class: reads RGB masks, writes palette PNGs
    void_color: list[int] | None = None  # [r, g, b] of task.ignore_index in RGB masks (voc: [224, 224, 192])


@dataclass
class TaskConfig:
    """What is segmented: nothing below data/ hard-codes the classes."""
    classes: list[str] = field(default_factory=list)
    # multilabel: sigmoid per class, Dice; multiclass: softmax, one label per pixel, mIoU; binary: one foreground
    # class, sigmoid, foreground Dice and IoU (modes/)
    mode: Literal["multilabel", "multiclass", "binary"] = "multilabel"
    # the on-disk layout (tasks/): handbone, coco, folders, or your own as "package.module:Name" / "path/file.py:Name"
    format: str = "handbone"
    # the submission (tasks/): handbone, trash, masks, or a plug-in; null: the layout's own (coco -> trash,
    # folders -> masks)
    submission: str | None = None
    # void in label maps (layouts that hold it: folders in multiclass mode): left out of the losses, the metric,
    # copy-paste and oversampling; null: no void (any value that is not a class is an error)
    ignore_index: int | None = 255
    folders: FoldersConfig | None = None  # task.format folders: its folders, suffixes and split lists
    params: dict = field(default_factory=dict)  # keyword settings of a plug-in layout (read by it, not here)


@dataclass
class SyntheticConfig:
    """Generate the built-in synthetic dataset into data.root when it is missing."""
    ids: int = 20
    test_ids: int = 5
    size: int = 2048
    seed: int = 0


@dataclass
class OversampleConfig:
    """Repeat training images holding rare classes: each image by the largest factor of its classes."""
    factors: dict = field(default_factory=dict)  # {class name: factor >= 1}
    inverse_frequency: bool = False  # factor = (images of the most frequent class) / (images of the class)
    max_factor: float = 4.0  # cap of the inverse-frequency factors


@dataclass
class DataConfig:
    root: str = "datasets/hand_bones"
    synthetic: SyntheticConfig | None = None
    image_size: int = 512  # training resolution (square); images are resized to it once, in the cache
    crop_size: int | None = None  # train on random crops of this size from the image_size cache (e.g. 2048 -> 1024)
    n_splits: int = 5
    fold: int = 0
    # kfold: data.fold of n_splits (handbone: by person; coco: multilabel-stratified over train_all.json);
    # files: coco's train.json / val.json
    split: Literal["kfold", "files"] = "kfold"
    oversample: OversampleConfig | None = None
    cache_dir: str = "data_cache"
    cache_workers: int = 0  # processes that build the cache; 0 = all cores
    batch_size: int = 8
    val_batch_size: int = 4
    num_workers: int = 2
    pin_memory: bool = True
    persistent_workers: bool = True
    prefetch_factor: int = 4
    pseudo_roots: list[str] = field(default_factory=list)  # pseudo_label.py outputs: training only, never validation
    mean: float = 0.5  # model input = (pixel / 255 - mean) / std, done on the training device
    std: float = 0.25


@dataclass
class ModelConfig:
    arch: str = "UnetPlusPlus"  # smp arch, fcn_resnet50/101, SwinUNETR, EffiSegNet, HRNetOCR, or plug-in "module:Name"
    encoder: str = "resnet34"  # any smp encoder or "tu-<timm name>"; HRNetOCR: hrnet_w18..w64; SwinUNETR: unused
    encoder_weights: str | None = None  # null, a hub name (e.g. imagenet, needs network), or a local file path
    in_channels: int = 1  # X-rays are grayscale
    head_prior: float | None = 0.01  # start the output bias at this foreground probability (null: framework default)
    params: dict = field(default_factory=dict)  # extra keyword arguments for the architecture (sizes, img_size)


@dataclass
class LossTerm:
    name: str = "bce"
    weight: float = 1.0
    params: dict = field(default_factory=dict)


@dataclass
class LossConfig:
    terms: list[LossTerm] = field(default_factory=lambda: [LossTerm("bce"), LossTerm("dice")])
    aux_weight: float = 0.4  # weight of the same loss on an auxiliary output (HRNetOCR's soft object regions)


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    params: dict = field(default_factory=dict)  # extra keyword arguments (betas, momentum, ...)


@dataclass
class SchedulerConfig:
    name: str | None = None  # step, plateau, cosine, cosine_restarts, or null for a constant rate
    warmup_epochs: float = 0.0  # linear warmup from warmup_start_factor * lr, counted in optimizer steps
    warmup_start_factor: float = 0.01
    params: dict = field(default_factory=dict)


@dataclass
class CopyPasteConfig:
    """Multiclass copy-paste (transforms/copy_paste.py): objects of `classes` cut from other training images."""
    classes: list[str] = field(default_factory=list)
    p: float = 0.5  # probability per training image
    max_objects: int = 2  # objects pasted per image, 1..max_objects


@dataclass
class TransformsConfig:
    """Augmentations by name: `train`/`val` run on the CPU (albumentations), `gpu` on the training device."""
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    gpu: list[dict] = field(default_factory=list)
    copy_paste: CopyPasteConfig | None = None  # multiclass only, before the `train` transforms


@dataclass
class TrainerConfig:
    epochs: int = 50
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    amp: Literal["off", "bf16", "fp16"] = "off"
    channels_last: bool = False
    compile: bool = False
    cudnn_benchmark: bool = True
    grad_clip: float | None = None  # max gradient norm
    accumulate: int = 1  # optimizer step every N batches
    seed: int = 42
    deterministic: bool = False
    val_every: int = 1
    early_stop_patience: int | None = None  # validations without improvement before stopping
    threshold: float = 0.5
    ddp_find_unused_parameters: bool = False  # under torchrun, when some layers get no gradient (encoder_depth < 5)
    max_nonfinite_steps: int = 25  # consecutive NaN/inf losses (each step skipped) before training stops with an error
    # false: last.pt is written every epoch (a crash or Ctrl-C can resume) and deleted when the run ends normally,
    # leaving best.pt only (sweep trials default to false)
    keep_last: bool = True


@dataclass
class AveragingConfig:
    """Weight averaging: an exponential moving average updated every step, or SWA (torch.optim.swa_utils)."""
    mode: Literal["off", "ema", "swa"] = "off"
    ema_decay: float = 0.999
    swa_start: float = 0.75  # fraction of the epochs after which SWA averages once per epoch
    swa_lr: float | None = None  # SWALR's target learning rate (default: optimizer.lr / 10)
    swa_anneal_epochs: int = 1


@dataclass
class CrfConfig:
    """DenseCRF on the multiclass softmax output (modes/crf.py, pydensecrf2), at inference."""
    iterations: int = 5
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 50.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 5.0


@dataclass
class PostprocessOps:
    """One class's post-processing of its predicted mask at inference (modes/postprocess.py)."""
    largest_component: bool = False  # keep only the largest connected component (8-connected)
    min_size: int = 0  # remove connected components smaller than this many pixels (at the image's own size)
    fill_holes: bool = False  # fill the background regions the mask encloses


@dataclass
class PredictConfig:
    """How a model sees a full image, shared by validation, inference and ensembles."""
    mode: Literal["resize", "sliding"] = "resize"
    window: int | None = None  # sliding-window tile, in pixels of the resized image; default data.crop_size
    overlap: float = 0.25
    tta: Literal["none", "hflip"] = "none"
    batch_size: int = 4
    crf: CrfConfig | None = None  # multiclass: refine the test predictions with DenseCRF
    # {class name or 'all': operations}: a class's own entry replaces 'all'; multiclass: object classes only
    postprocess: dict[str, PostprocessOps] = field(default_factory=dict)


@dataclass
class NotifyConfig:
    """Slack-compatible webhook messages; the URL is a secret: give it as ${ENV_VAR} (saved files redact a literal)."""
    webhook: str = ""
    events: list[Literal["start", "end", "crash", "best"]] = field(default_factory=lambda: ["start", "end", "crash"])


@dataclass
class LoggingConfig:
    """Tracking (tracking/): metrics.jsonl is always written; these backends receive the same, on rank 0."""
    backends: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=list)
    image_every: int = 5  # validation overlays every N validations (0: none)
    mlflow_uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<run dir's parent>/mlflow.db
    wandb_project: str = "hand-bone-segmentation"  # wandb project and MLflow experiment name
    wandb_mode: Literal["online", "offline"] | None = None  # null: online when a key is configured, else offline
    mlflow_log_checkpoint: bool = False  # copy best.pt into the MLflow store (false: its path, tag best_checkpoint)
    notify: NotifyConfig | None = None


@dataclass
class Config:
    name: str = "run"
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    transforms: TransformsConfig = field(default_factory=TransformsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `3e-4` as a string; every config user writes it as a number, so resolve it as a float.
    Stricter than PyYAML where it would silently do the wrong thing: a key given twice in one mapping is an error
    (PyYAML keeps the last: `lr: 0.001` then `lr: 5.0` trained at 5.0), and aliases may not expand to more than
    MAX_YAML_NODES values (a "billion laughs" document is a few lines that every later walk of the tree expands)."""

    def construct_document(self, node):
        _count_nodes(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key, mark = self.construct_object(key_node), key_node.start_mark
                if key in seen:
                    first = seen[key]
                    where = (f"lines {first.line + 1} and {mark.line + 1}" if first.line != mark.line else
                             f"line {mark.line + 1}, columns {first.column + 1} and {mark.column + 1}")
                    raise _Refused(f"key {key!r} is given twice in one mapping ({where}); keep one")
                seen[key] = mark
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|[0-9][0-9_]*[eE][-+]?[0-9]+|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))

MAX_YAML_NODES = 100_000  # the largest shipped config has a few hundred values; a sweep space or queue, thousands


class _Refused(Exception):
    """A YAML document this loader will not build; the caller names the file or the --set item."""


def _count_nodes(node, sizes: dict, open_nodes: set) -> int:
    """Values the document holds once every alias is expanded, each shared node counted once per use (memoized by
    node, so a bomb of 10^9 values costs a few calls per line)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise _Refused("a YAML alias refers to the list or mapping that contains it (a recursive structure)")
    open_nodes.add(id(node))
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_count_nodes(child, sizes, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(_count_nodes(k, sizes, open_nodes) + _count_nodes(v, sizes, open_nodes) for k, v in node.value)
    open_nodes.discard(id(node))
    if total > MAX_YAML_NODES:
        raise _Refused(f"YAML aliases expand to more than {MAX_YAML_NODES} values (an alias bomb?); write the "
                       "values out")
    sizes[id(node)] = total
    return total


def _parse_yaml(text: str, source: str):
    """`source` (the file, or the --set item) starts every error message."""
    try:
        return yaml.load(text, Loader=_Loader)
    except _Refused as e:
        raise ConfigError(f"{source}: {e}") from None
    except RecursionError:
        raise ConfigError(f"{source}: YAML nested too deeply") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config with its `_base_` files, apply `key.path=value` overrides, validate."""
    path = Path(path)
    raw = _read_with_bases(path, stack=())
    raw.setdefault("name", path.stem)
    return from_dict(raw, source=str(path), overrides=overrides)


def from_dict(raw: dict, source: str = "config", overrides: list[str] = ()) -> Config:
    """Validate a plain dict (e.g. the config stored in a checkpoint), with `--set` overrides, into a Config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the config must be a mapping, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for item in overrides:
        _apply_override(raw, item)
    _upgrade_logging_keys(raw)
    try:
        cfg = _build(Config, raw, "")
        _check_semantics(cfg)
        return cfg
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _upgrade_logging_keys(raw: dict) -> None:
    """Configs and checkpoints written before `logging.backends` still load: `logging.wandb: true` is wandb."""
    section = raw.get("logging")
    if isinstance(section, dict) and section.pop("wandb", None) is True:
        section.setdefault("backends", ["wandb"])


def to_dict(cfg: Config) -> dict:
    """The config as plain data, for every saved copy: a literal webhook URL (a secret) is redacted."""
    raw = dataclasses.asdict(cfg)
    if secret_values(cfg):
        raw["logging"]["notify"]["webhook"] = REDACTED
    return raw


REDACTED = "<redacted>"
_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")  # ${ENV_VAR}: kept, the value is read when posting


def secret_values(cfg: Config) -> list[str]:
    """The literal secrets of a config (the webhook URL; a ${ENV_VAR} reference is none): no saved copy of the
    config or of the command line that gave them holds them."""
    notify = cfg.logging.notify
    return [notify.webhook] if notify and notify.webhook and not _ENV_REF.fullmatch(notify.webhook) else []


def redact(texts: list[str], secrets: list[str]) -> list[str]:
    """`texts` (a command line) with every occurrence of a secret replaced by REDACTED, in whatever form it was
    given (`--set logging.notify.webhook=URL`, `--set=...`, inside a YAML mapping, ...)."""
    out = []
    for text in texts:
        for secret in secrets:
            text = text.replace(secret, REDACTED)
        out.append(text)
    return out


def save_config(cfg: Config, path: str | Path) -> None:
    write_text_atomic(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_yaml(path: str | Path) -> dict:
    """One YAML mapping with this loader's number rules and one-line errors (also read by campaign/ spaces)."""
    return _read_yaml(Path(path))


def _read_yaml(path: Path) -> dict:
    try:
        data = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a YAML config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a YAML text file (byte {e.object[e.start]:#04x} at offset {e.start} is not "
                          "UTF-8)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config ({os_reason(e)})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({' '.join(str(e).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _read_with_bases(path: Path, stack: tuple) -> dict:
    """Merge `_base_` files first (in order), then this file on top: later keys override earlier ones."""
    if path.resolve() in stack:
        raise ConfigError(f"{path}: circular _base_ inheritance")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths")
    merged: dict = {}
    for base in bases:
        merged = _merge(merged, _read_with_bases(path.parent / base, stack + (path.resolve(),)))
    return _merge(merged, data)


def _merge(base: dict, top: dict) -> dict:
    """Deep-merge mappings; lists and scalars in `top` replace those in `base`."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(raw: dict, item: str) -> None:
    """`optimizer.lr=3e-4`: the value is parsed as YAML, so numbers, lists and null work."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE")
    key, text = item.split("=", 1)
    try:
        value = _parse_yaml(text, f"--set {item!r}")
    except yaml.YAMLError:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


# ----------------------------------------------------------------------------------------------- validation


def _build(cls, raw: Any, path: str):
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(f"unknown key '{full}'{_did_you_mean(key, names, path)}")
        kwargs[key] = _check(hints[key], value, full)
    return cls(**kwargs)


def _did_you_mean(key, names, path) -> str:
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
    if not close:
        return f" (valid keys: {', '.join(names)})"
    return f" (did you mean '{path + '.' if path else ''}{close[0]}'?)"


def _check(tp, value, path: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check(inner[0], value, path)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is Literal:
        if isinstance(value, bool):
            value = _yaml_word(value, args, path)
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_type_name(value)}")
        return [_check(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_type_name(value)}")
        if args and dataclasses.is_dataclass(args[1]):  # a mapping of typed sections (predict.postprocess)
            bad = next((k for k in value if not isinstance(k, str)), None)
            if bad is not None:
                raise ConfigError(f"{path}: keys must be names, got {_type_name(bad)}")
            return {k: _build(args[1], v, f"{path}.{k}") for k, v in value.items()}
        _check_finite_tree(value, path)
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_type_name(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_type_name(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {_type_name(value)}")
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number, got {value}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_type_name(value)}")
        return value
    raise TypeError(f"unsupported schema type {tp} at {path}")  # a bug in the schema, not user input


_BOOL_WORDS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


def _yaml_word(value: bool, choices: tuple, path: str) -> str:
    """YAML 1.1 reads off/no/false (on/yes/true) as a bool: give back the choice it was written as (`trainer.amp:
    off`, also from --set); a bool for a key without such a choice is an error listing the choices."""
    words = [c for c in choices if c in _BOOL_WORDS[value]]
    if len(words) != 1:
        raise ConfigError(f"{path}: {str(value).lower()} (YAML reads {'/'.join(_BOOL_WORDS[value])} as "
                          f"{str(value).lower()}) is not one of {', '.join(map(repr, choices))}")
    return words[0]


def _check_finite_tree(value, path: str) -> None:
    """Free-form parameter mappings (optimizer.params, loss params, ...) hold no NaN or inf either."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: must be a finite number, got {value}")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite_tree(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_finite_tree(item, f"{path}[{i}]")


def _type_name(value) -> str:
    return "null" if value is None else f"{type(value).__name__} {value!r}"


def _check_semantics(cfg: Config) -> None:
    """Cross-field rules the types alone cannot express."""
    classes = cfg.task.classes
    if not classes:
        raise ConfigError("task.classes: the class list is empty")
    if len(set(classes)) != len(classes):
        dup = next(c for c in classes if classes.count(c) > 1)
        raise ConfigError(f"task.classes: class {dup!r} is listed twice")
    _check_task(cfg.task)
    d = cfg.data
    if d.n_splits < 2:
        raise ConfigError(f"data.n_splits: must be at least 2, got {d.n_splits}")
    if not 0 <= d.fold < d.n_splits:
        raise ConfigError(f"data.fold: {d.fold} is out of range for data.n_splits={d.n_splits} (0..{d.n_splits - 1})")
    for key in ("image_size", "batch_size", "val_batch_size", "prefetch_factor"):
        if getattr(d, key) < 1:
            raise ConfigError(f"data.{key}: must be positive, got {getattr(d, key)}")
    if d.num_workers < 0 or d.cache_workers < 0:
        raise ConfigError("data.num_workers and data.cache_workers must be >= 0")
    if d.crop_size is not None and not (8 <= d.crop_size <= d.image_size and d.crop_size % 8 == 0):
        raise ConfigError(f"data.crop_size: must be a multiple of 8 between 8 and data.image_size={d.image_size}, "
                          f"got {d.crop_size}")
    t = cfg.trainer
    for key in ("epochs", "accumulate", "val_every"):
        if getattr(t, key) < 1:
            raise ConfigError(f"trainer.{key}: must be at least 1, got {getattr(t, key)}")
    _check_classes(cfg)
    if not 0.0 < t.threshold < 1.0:
        raise ConfigError(f"trainer.threshold: must be between 0 and 1, got {t.threshold}")
    if not 0.0 <= cfg.predict.overlap < 1.0:
        raise ConfigError(f"predict.overlap: must be in [0, 1), got {cfg.predict.overlap}")
    a = cfg.averaging
    if not 0.0 < a.ema_decay < 1.0:
        raise ConfigError(f"averaging.ema_decay: must be between 0 and 1, got {a.ema_decay}")
    if not 0.0 <= a.swa_start < 1.0:
        raise ConfigError(f"averaging.swa_start: must be in [0, 1), got {a.swa_start}")
    if cfg.model.head_prior is not None and not 0.0 < cfg.model.head_prior < 1.0:
        raise ConfigError(f"model.head_prior: must be between 0 and 1, got {cfg.model.head_prior}")
    if cfg.logging.image_every < 0:
        raise ConfigError(f"logging.image_every: must be >= 0, got {cfg.logging.image_every}")
    if cfg.logging.notify is not None and not cfg.logging.notify.webhook:
        raise ConfigError("logging.notify.webhook: give the URL, or ${ENV_VAR} naming a variable that holds it")
    if cfg.optimizer.lr <= 0:
        raise ConfigError(f"optimizer.lr: must be positive, got {cfg.optimizer.lr}")
    check_postprocess(cfg.predict.postprocess, classes, cfg.task.mode == "multiclass", "predict.postprocess")
    _check_ranges(cfg)


def _at_least(key: str, value, low, inclusive: bool = True) -> None:
    if value is not None and (value < low if inclusive else value <= low):
        raise ConfigError(f"{key}: must be {'at least' if inclusive else 'greater than'} {low}, got {value}")


def _check_ranges(cfg: Config) -> None:
    """Numbers that would train silently wrong (NaN losses, empty masks) when out of range.
    Non-finite numbers are already refused by _check."""
    _at_least("data.std", cfg.data.std, 0.0, inclusive=False)  # the input is divided by it
    _at_least("optimizer.weight_decay", cfg.optimizer.weight_decay, 0.0)
    _at_least("scheduler.warmup_epochs", cfg.scheduler.warmup_epochs, 0.0)
    if not 0.0 < cfg.scheduler.warmup_start_factor <= 1.0:
        raise ConfigError(f"scheduler.warmup_start_factor: must be in (0, 1], got {cfg.scheduler.warmup_start_factor}")
    _at_least("trainer.grad_clip", cfg.trainer.grad_clip, 0.0, inclusive=False)
    _at_least("trainer.max_nonfinite_steps", cfg.trainer.max_nonfinite_steps, 1)
    _at_least("trainer.early_stop_patience", cfg.trainer.early_stop_patience, 1)
    _at_least("averaging.swa_lr", cfg.averaging.swa_lr, 0.0, inclusive=False)
    _at_least("averaging.swa_anneal_epochs", cfg.averaging.swa_anneal_epochs, 1)
    _at_least("predict.batch_size", cfg.predict.batch_size, 1)
    _at_least("predict.window", cfg.predict.window, 8)
    for i, term in enumerate(cfg.loss.terms):
        _at_least(f"loss.terms[{i}].weight", term.weight, 0.0)
    if cfg.loss.terms and sum(term.weight for term in cfg.loss.terms) <= 0:
        raise ConfigError("loss.terms: the weights sum to 0, nothing would be learned")
    if cfg.data.synthetic is not None:
        for key in ("ids", "test_ids", "size"):
            _at_least(f"data.synthetic.{key}", getattr(cfg.data.synthetic, key), 1)
    sides = {"data.image_size": cfg.data.image_size, "data.crop_size": cfg.data.crop_size,
             "predict.window": cfg.predict.window,
             "data.synthetic.size": cfg.data.synthetic.size if cfg.data.synthetic else None}
    for key, side in sides.items():
        if side is not None and side > MAX_SIDE:
            raise ConfigError(f"{key}: must be at most {MAX_SIDE} pixels, got {side}")
    _check_optimizer_params(cfg.optimizer)


# A side in pixels beyond this is a typo: 8x the competition's 2048 px X-rays, and a single 16384^2 map of 29
# float classes is already 31 GB; OpenCV's resize fails outright beyond 32767 (its coordinates are 16-bit).
MAX_SIDE = 16384

def _check_optimizer_params(opt: OptimizerConfig) -> None:
    """`betas` (Adam, AdamW, RAdam, Lion) is two numbers: torch reads betas[1] without checking the length."""
    betas = opt.params.get("betas")
    if "betas" in opt.params and (not isinstance(betas, list) or len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)):
        raise ConfigError(f"optimizer.params.betas: expected two numbers in [0, 1), got {betas!r}")


def _check_task(task: TaskConfig) -> None:
    """Void must be a uint8 value that no class uses; task.folders belongs to the folders layout."""
    if task.ignore_index is not None:
        if not 0 <= task.ignore_index <= 255:
            raise ConfigError(f"task.ignore_index: label maps are 8-bit, so void must be in 0..255 (or null), got "
                              f"{task.ignore_index}")
        if task.mode == "multiclass" and task.ignore_index < len(task.classes):
            raise ConfigError(f"task.ignore_index: {task.ignore_index} is the label of class "
                              f"{task.classes[task.ignore_index]!r}; void needs a value no class uses (e.g. 255)")
    if task.folders is not None and task.format != "folders":
        raise ConfigError(f"task.folders: read by task.format folders only, not {task.format!r}; remove it")


def parse_section(tp, raw, key: str, source: str):
    """A piece of config read from another file (a selection plan's `crf`, `postprocess`), checked by this schema
    as the key `key` would be: `tp` is its type, e.g. dict[str, PostprocessOps]; errors name `source`."""
    try:
        return _check(tp, raw, key)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def check_postprocess(spec: dict[str, PostprocessOps], classes: list[str], multiclass: bool, where: str) -> None:
    """Keys are class names or 'all'; the multiclass background is what removed pixels become, never processed."""
    for key, ops in spec.items():
        if key != "all" and key not in classes:
            raise ConfigError(f"{where}: unknown class {key!r}{_did_you_mean(key, ['all', *classes], '')}")
        if multiclass and key == classes[0]:
            raise ConfigError(f"{where}.{key}: the background ({key!r}) is what removed pixels become; post-process "
                              "the object classes")
        if ops.min_size < 0:
            raise ConfigError(f"{where}.{key}.min_size: must be >= 0, got {ops.min_size}")


def _check_classes(cfg: Config) -> None:
    """Class names used by other keys must be classes; what needs the layout and mode is checked by
    tasks.build_task (a layout may be a plug-in this schema cannot know)."""
    task = cfg.task
    if cfg.data.oversample is not None:
        unknown = [c for c in cfg.data.oversample.factors if c not in task.classes]
        if unknown:
            raise ConfigError(f"data.oversample.factors: unknown class {unknown[0]!r}")
    cp = cfg.transforms.copy_paste
    if cp is not None:
        unknown = [c for c in cp.classes if c not in task.classes[1:]]
        if unknown or not cp.classes:
            raise ConfigError(f"transforms.copy_paste.classes: {unknown[0]!r} is not a class of task.classes[1:]"
                              if unknown else "transforms.copy_paste.classes: name at least one class")
        if not 0.0 <= cp.p <= 1.0 or cp.max_objects < 1:
            raise ConfigError("transforms.copy_paste: p must be in [0, 1] and max_objects at least 1")
