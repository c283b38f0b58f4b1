"""A checkpoint to an ONNX file that carries everything a consumer needs to reproduce the framework's output
(export.py's work; the export itself is models/onnx_model.py).

The metadata (string values; JSON where structured):
  framework, metadata_version       "hand-bone-segmentation", "1": marks a file this framework can run
  task_mode, task_layout            multilabel | multiclass; handbone | coco (task.format)
  task_submission                   handbone | trash: the CSV the framework writes
  classes                           JSON list, in submission order (output channel i is classes[i])
  input_size, in_channels           "[H, W]" the network takes (batch is dynamic); 1 (grayscale) or 3 (RGB)
  resize                            how an image becomes the input: resized to input_size with area averaging
                                    (or sliding windows of that size over the image resized to image_size)
  image_size, predict_mode, window, overlap, tta
  transforms_val                    JSON list of albumentations applied after the resize (e.g. CLAHE)
  mean, std                         input = (pixel / 255 - mean) / std, on every channel
  activation                        sigmoid (multilabel) | softmax (multiclass, over the channel axis)
  decision                          threshold (a pixel holds class c where p_c > threshold_c) | argmax
  threshold, thresholds             multilabel: trainer.threshold, and JSON {class: threshold} per class (from the
                                    run's thresholds file when there is one, else all equal to threshold)
  thresholds_source                 the file the per-class thresholds came from, or "trainer.threshold"
  config                            JSON of the run's full resolved config (what inference.py runs with)
  framework_version                 git commit of the code that exported the file ("+dirty" with local changes)
  run_commit                        git commit of the code that trained the run (RUN/run_info.json), or unknown
  checkpoint, epoch, best_score     where the weights came from
  exporter, parity_max_abs_diff     dynamo | torchscript; max |ONNX Runtime - PyTorch| logit on a random batch
  torch_version
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from models.onnx_model import FRAMEWORK, METADATA_VERSION, ExportResult, export_onnx, model_input_size
from tasks.registry import build_task
from trainer.checkpoint import load_checkpoint
from trainer.inference import load_member, parse_thresholds
from trainer.rundir import git_state
from trainer.runtime import Runtime
from utils.config import Config, from_dict, to_dict
from utils.errors import UserError

ACTIVATIONS = {"multilabel": ("sigmoid", "threshold"), "multiclass": ("softmax", "argmax")}


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int | None = None,
                      image_size: int | None = None, thresholds_file: str | None = None, overrides=(),
                      exporter: str = "auto", simplify: bool = False) -> tuple[Config, ExportResult]:
    """Export a train.py checkpoint (its averaged weights when it holds them) at the size its config predicts
    with (`image_size` and `overrides` change the config first, and the changed config is what the file
    stores). Thresholds: `thresholds_file`, else CHECKPOINT_DIR/thresholds.json when present."""
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    extra = list(overrides)
    if image_size is not None:
        extra.append(f"data.image_size={image_size}")
    cfg = from_dict(state["config"], str(checkpoint), extra)
    size = model_input_size(cfg)
    if image_size is not None and "img_size" in cfg.model.params:  # Swin, MaxViT: the size is built in
        cfg.model.params["img_size"] = size
    member = load_member(checkpoint, cfg, Runtime(device=torch.device("cpu"), amp_dtype=None), state=state)
    metadata = {**_task_metadata(cfg, checkpoint, thresholds_file, size),
                "checkpoint": str(checkpoint), "epoch": str(state.get("epoch", "")),
                "best_score": str(state.get("best_score", "")), "framework_version": _code_version(),
                "run_commit": _run_commit(checkpoint.parent), "torch_version": torch.__version__}
    result = export_onnx(member.predictor.model, out, (cfg.model.in_channels, size, size), metadata, opset,
                         exporter, simplify)
    return cfg, result


def _task_metadata(cfg: Config, checkpoint: Path, thresholds_file: str | None, size: int) -> dict[str, str]:
    task = build_task(cfg)
    mode = task.mode.name
    activation, decision = ACTIVATIONS[mode]
    metadata = {
        "framework": FRAMEWORK, "metadata_version": METADATA_VERSION, "task_mode": mode,
        "task_layout": cfg.task.format, "task_submission": cfg.task.submission or task.layout.submission,
        "classes": json.dumps(cfg.task.classes), "input_size": json.dumps([size, size]),
        "in_channels": str(cfg.model.in_channels),
        "resize": "sliding windows over the image resized to image_size (area averaging)" if size <
                  cfg.data.image_size else "whole image resized to input_size (area averaging)",
        "image_size": str(cfg.data.image_size), "predict_mode": cfg.predict.mode,
        "window": str(size), "overlap": str(cfg.predict.overlap), "tta": cfg.predict.tta,
        "transforms_val": json.dumps(cfg.transforms.val), "mean": str(cfg.data.mean), "std": str(cfg.data.std),
        "activation": activation, "decision": decision, "config": json.dumps(to_dict(cfg)),
    }
    default_file = checkpoint.parent / "thresholds.json"
    if thresholds_file is None and default_file.is_file() and mode == "multilabel":
        thresholds_file = str(default_file)
    if decision == "threshold":
        values = parse_thresholds(cfg.trainer.threshold, thresholds_file, cfg.task.classes).tolist()
        metadata.update(threshold=str(cfg.trainer.threshold), thresholds_source=thresholds_file or "trainer.threshold",
                        thresholds=json.dumps({c: round(v, 6) for c, v in zip(cfg.task.classes, values)}))
    elif thresholds_file is not None:
        raise UserError(f"--thresholds {thresholds_file}: task.mode {mode} predicts by argmax, without thresholds")
    return metadata


def _code_version() -> str:
    state = git_state()
    if state is None:
        return "unknown"
    return state["commit"] + ("+dirty" if state["dirty"] else "")


def _run_commit(run_dir: Path) -> str:
    """The commit run_info.json recorded when the run was trained; unknown for a checkpoint moved elsewhere."""
    try:
        git = json.loads((run_dir / "run_info.json").read_text()).get("git") or {}
    except (OSError, ValueError, AttributeError):
        return "unknown"
    commit = git.get("commit") if isinstance(git, dict) else None
    if not commit:
        return "unknown"
    return commit + ("+dirty" if git.get("dirty") else "")
