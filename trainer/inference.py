"""From checkpoints (or saved probability maps) to a submission CSV, shared by inference.py and ensemble.py.

Per test image: decode and resize in DataLoader workers (I/O overlaps compute), predict with each member at its
own input size and TTA, then (trainer/fullsize.py) upsample, average with the weights and threshold only inside
each class's box where the mask can be positive, run-length encode the crops with their offsets and write in a
background thread while the next image is predicted. No full-size map is ever allocated.
"""
from __future__ import annotations

import json
import queue
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from data.dataset import image_tensor
from models.factory import build_model
from models.onnx_model import OnnxNetwork, check_config_fits, read_onnx_info
from modes.fullsize import FullSizeProbs
from modes.postprocess import Postprocess
from tasks.registry import Task, build_task
from trainer.checkpoint import check_finite, load_checkpoint
from trainer.predictor import Predictor
from trainer.runtime import Runtime, setup_runtime
from transforms.cpu import apply_cpu_transforms, build_cpu_transforms
from utils.cli import check_threshold
from utils.config import Config, from_dict, load_config
from utils.errors import DataError, UserError
from utils.files import write_error, write_text_atomic
from utils.images import resize_image

PROBS_SCALE = 255  # saved probability maps are uint8: p * 255, rounded


@dataclass
class ModelMember:
    """One model of an ensemble (or the only one), with its own input size, CPU transforms and TTA."""
    name: str
    cfg: Config
    task: Task
    predictor: Predictor
    weight: float = 1.0

    @property
    def image_size(self) -> int:
        return self.cfg.data.image_size


@dataclass
class ProbsMember:
    """Probability maps saved by `inference.py --save-probs`, used in place of a model."""
    name: str
    folder: Path
    classes: list[str]
    weight: float = 1.0

    def load(self, key: str) -> torch.Tensor:
        """(classes, h, w) probabilities of one test image; a damaged or foreign .npz is one line naming it."""
        path = self.folder / Path(key).with_suffix(".npz")
        if not path.is_file():
            raise DataError(f"{self.folder}: no saved probabilities for test image {key}")
        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile) or "probs" not in data.files:
                raise DataError(f"{path}: no 'probs' array inside (not written by inference.py --save-probs)")
            with data:
                probs = data["probs"]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise DataError(f"{path}: unreadable probability file ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:120]})") from None
        if probs.dtype != np.uint8 or probs.ndim != 3 or probs.shape[0] != len(self.classes) or 0 in probs.shape:
            raise DataError(f"{path}: expected uint8 maps of shape ({len(self.classes)} classes of probs.json, h, w), "
                            f"got {probs.dtype} {probs.shape}")
        return torch.from_numpy(probs).float().div_(PROBS_SCALE)


def member_config(checkpoint: str | Path, config: str | None = None, overrides=(),
                  tta: str | None = None, state: dict | None = None) -> Config:
    """The config a checkpoint is run with: its own unless `config` is given, with overrides and TTA.
    `state`: the checkpoint already loaded, so that a large file is read once."""
    if is_onnx(checkpoint):
        return onnx_member_config(checkpoint, config, overrides, tta)
    state = state if state is not None else load_checkpoint(checkpoint)
    cfg = load_config(config, overrides) if config else from_dict(state["config"], str(checkpoint), overrides)
    if tta is not None:
        cfg.predict.tta = tta
    return cfg


def load_member(checkpoint: str | Path, cfg: Config, runtime: Runtime, weight: float = 1.0,
                state: dict | None = None) -> ModelMember:
    if is_onnx(checkpoint):
        return load_onnx_member(checkpoint, cfg, runtime, weight)
    state = state if state is not None else load_checkpoint(checkpoint)
    if state.get("classes") != cfg.task.classes:
        raise UserError(f"{checkpoint}: the checkpoint's classes differ from task.classes of the config")
    check_finite(state, checkpoint)  # NaN weights would write an all-empty submission without a word
    task = build_task(cfg)
    model = build_model(cfg.model, len(cfg.task.classes))
    try:
        model.load_state_dict(state.get("averaged", state["model"]))  # EMA/SWA weights when the run kept them
    except RuntimeError as e:
        raise UserError(f"{checkpoint}: weights do not fit model {cfg.model.arch}/{cfg.model.encoder} of the config "
                        f"({' '.join(str(e).split())[:160]})") from None
    model = model.to(runtime.device).eval()
    if cfg.trainer.channels_last:
        model = model.to(memory_format=torch.channels_last)
    predictor = Predictor(model, cfg.predict, runtime, cfg.data.mean, cfg.data.std, cfg.trainer.channels_last,
                          window=cfg.data.crop_size, activation=task.mode.activation)
    return ModelMember(str(checkpoint), cfg, task, predictor, weight)


def load_members(checkpoints: list, weights: list[float], overrides=(), tta: str | None = None
                 ) -> tuple[list[ModelMember], Runtime | None]:
    """Models from checkpoints, each file read once; the runtime follows the first checkpoint's trainer settings."""
    members, runtime = [], None
    for path, weight in zip(checkpoints, weights):
        state = None if is_onnx(path) else load_checkpoint(path)
        cfg = member_config(path, None, overrides, tta, state)
        runtime = runtime or setup_runtime(cfg.trainer)
        members.append(load_member(path, cfg, runtime, weight, state))
    return members, runtime


def expand_checkpoints(paths: list) -> list[Path]:
    """A run folder stands for its fold checkpoints (k-fold runs) or its own best.pt."""
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("fold*/best.pt")) or sorted(path.glob("best.pt"))
            if not found:
                raise UserError(f"{path}: run folder without best.pt or fold*/best.pt")
            out.extend(found)
        else:
            out.append(path)
    return out


def is_onnx(path: str | Path) -> bool:
    """An .onnx file from export.py is a model member like a checkpoint (its config comes from its metadata)."""
    return Path(path).suffix.lower() == ".onnx"


def onnx_member_config(path: str | Path, config: str | None = None, overrides=(), tta: str | None = None) -> Config:
    """The config stored in an exported file (or `config`), with overrides and TTA, checked against the file."""
    info = read_onnx_info(path)
    cfg = load_config(config, overrides) if config else from_dict(info.config, str(path), overrides)
    if tta is not None:
        cfg.predict.tta = tta
    check_config_fits(info, cfg)
    return cfg


def load_onnx_member(path: str | Path, cfg: Config, runtime: Runtime, weight: float = 1.0) -> ModelMember:
    """An ONNX Runtime session in the place of the network: the Predictor runs it like the module (TTA, windows)."""
    check_config_fits(read_onnx_info(path), cfg)
    task = build_task(cfg)
    predictor = Predictor(OnnxNetwork(path, runtime.device), cfg.predict, runtime, cfg.data.mean, cfg.data.std,
                          window=cfg.data.crop_size, activation=task.mode.activation)
    return ModelMember(str(path), cfg, task, predictor, weight)


def load_probs_member(folder: str | Path, weight: float = 1.0) -> ProbsMember:
    folder = Path(folder)
    info = folder / "probs.json"
    if not info.is_file():
        raise UserError(f"{folder}: not a probability folder (no probs.json; write one with inference.py --save-probs)")
    try:
        data = json.loads(info.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError: bad JSON or bytes that are not UTF-8
        raise DataError(f"{info}: unreadable ({' '.join(str(e).split())[:120]})") from None
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{info}: expected {{\"classes\": [class names]}} as inference.py --save-probs writes it")
    return ProbsMember(str(folder), folder, classes, weight)


class TestImages(Dataset):
    """Test images decoded and resized in the workers, once per distinct (input size, CPU transforms)."""

    def __init__(self, samples: list, members: list[ModelMember], read):
        self.samples = samples
        self.read = read  # the layout's decoder: grayscale hand bones, RGB photographs
        keys = [(m.image_size, json.dumps(m.cfg.transforms.val, sort_keys=True)) for m in members]
        unique = list(dict.fromkeys(keys))
        self.inputs = [(size, build_cpu_transforms(json.loads(val), "transforms.val")) for size, val in unique]
        self.slots = [unique.index(k) for k in keys]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict:
        sample = self.samples[i]
        image = self.read(sample.image)
        inputs = [apply_cpu_transforms(transform, resize_image(image, size), None)[0]
                  for size, transform in self.inputs]
        inputs = [image_tensor(x) for x in inputs]
        return {"key": sample.key, "size": torch.tensor(image.shape[:2]), "inputs": [inputs[s] for s in self.slots]}


def parse_thresholds(threshold: float, thresholds_file: str | None, classes: list[str]) -> torch.Tensor:
    """One threshold per class: from a JSON {class: value} written by --tune-thresholds, or the global one.
    Every value must be a finite number strictly between 0 and 1 (0 or 1 gives full or empty masks)."""
    if thresholds_file is None:
        return torch.full((len(classes),), check_threshold(threshold, "--threshold"))
    path = Path(thresholds_file)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable thresholds JSON ({e})") from None
    if isinstance(data, dict) and "thresholds" in data:
        data = data["thresholds"]  # the file written by --tune-thresholds nests them
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping {{class: threshold}}, got {type(data).__name__}")
    missing = [c for c in classes if c not in data]
    if missing:
        raise UserError(f"{path}: no threshold for class {missing[0]!r} ({len(missing)} missing)")
    return torch.tensor([check_threshold(data[c], f"{path}: class {c!r}") for c in classes])


def check_members(members: list, classes: list[str] | None = None) -> list[str]:
    """All members must predict the same classes in the same order; name the one that differs."""
    reference = classes or _classes_of(members[0])
    for m in members:
        if _classes_of(m) != reference:
            raise UserError(f"{m.name}: predicts classes {_classes_of(m)[:3]}... which differ from "
                            f"{members[0].name} ({reference[:3]}...)")
    return reference


def _classes_of(member) -> list[str]:
    return member.cfg.task.classes if isinstance(member, ModelMember) else member.classes


def iter_full_size_probs(members: list, samples: list, runtime: Runtime, read_image, num_workers: int = 2,
                         progress: bool = True, save_probs: Path | None = None, desc: str = "predict"):
    """Yield (sample, FullSizeProbs: the weighted mean of the members' probabilities at the image's own size,
    computed only where asked), one image at a time; with `save_probs`, each model's model-resolution maps are
    saved on the way. `read_image`: the layout's decoder."""
    models = [m for m in members if isinstance(m, ModelMember)]
    loader = DataLoader(TestImages(samples, models, read_image), batch_size=None, num_workers=num_workers,
                        pin_memory=runtime.device.type == "cuda", prefetch_factor=4 if num_workers else None)
    by_key = {s.key: s for s in samples}
    for item in tqdm(loader, desc=desc, unit="img", disable=not progress):
        size = tuple(item["size"].tolist())
        inputs = iter(item["inputs"])  # one per ModelMember, in order
        parts = []
        for member in members:
            if isinstance(member, ModelMember):
                p = member.predictor(next(inputs)[None])[0]
                if save_probs is not None:
                    _save_probs(save_probs, item["key"], p)
            else:
                p = member.load(item["key"]).to(runtime.device)
            parts.append((p, member.weight))
        yield by_key[item["key"]], FullSizeProbs(parts, size)


def write_submission(members: list, task: Task, data_root: str | Path, out: str | Path, runtime: Runtime,
                     thresholds: torch.Tensor | None = None, save_probs: str | Path | None = None,
                     save_masks: str | Path | None = None, num_workers: int = 2, progress: bool = True,
                     postprocess: dict | None = None) -> int:
    """Predict every test image with the weighted members and write the task's submission; returns the number of
    images. `thresholds`: per class (multilabel); DenseCRF follows the first model's predict.crf; `postprocess`
    ({class or 'all': PostprocessOps}, as predict.postprocess) defaults to the first model's predict.postprocess."""
    classes = check_members(members, task.classes)
    samples = task.submission.test_samples(data_root)
    crf = next((m.cfg.predict.crf for m in members if isinstance(m, ModelMember)), None)
    if postprocess is None:
        postprocess = next((m.cfg.predict.postprocess for m in members if isinstance(m, ModelMember)), None)
    cleanup = Postprocess.build(postprocess, classes, multiclass=task.mode.label_kind == "map")
    if save_probs is not None:
        save_probs = Path(save_probs)
        try:
            save_probs.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(save_probs, e) from None
    extra = {} if cleanup is None else {"postprocess": cleanup}  # a writer without post-processing needs no argument
    writer = task.submission.writer(out, thresholds=thresholds, crf=crf, save_masks=save_masks,
                                    read_image=task.layout.read_image, **extra)
    with writer, _Background(writer.write) as background:
        for sample, probs in iter_full_size_probs(members, samples, runtime, task.layout.read_image, num_workers,
                                                  progress, save_probs):
            background.submit(writer.prepare(sample, probs))
    if save_probs is not None:
        write_text_atomic(save_probs / "probs.json", json.dumps({"classes": classes}))
    return len(samples)


def _save_probs(folder: Path, key: str, probs: torch.Tensor) -> None:
    """Model-resolution maps, uint8, compressed; the ensemble upsamples them like live predictions."""
    path = folder / Path(key).with_suffix(".npz")
    quantized = probs.mul(PROBS_SCALE).round_().to(torch.uint8).cpu().numpy()
    tmp = path.with_name(path.stem + ".tmp.npz")  # savez adds .npz to any other name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, probs=quantized)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, e) from None


class _Background:
    """Encode and write one image while the next is predicted (a thread: the GPU work is async)."""

    def __init__(self, write):
        self.write = write
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def submit(self, payload) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(payload)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self.write(item)
                except BaseException as e:  # re-raised in the main thread
                    self.error = e

    def __exit__(self, exc_type, exc, tb):
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc is None:
            raise self.error
        return False
