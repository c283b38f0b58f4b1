"""ONNX: export a network with the metadata a consumer needs, check it, read that metadata back, and run the file
through ONNX Runtime as a callable network that the trainer's Predictor drives exactly like an nn.Module (so flip
TTA, sliding windows, the full-size path and the submission writers apply unchanged).

Export uses torch's own exporter: the dynamo path (torch.export, then onnxscript) where it works, the TorchScript
path (`dynamo=False`) otherwise; the file records which. The graph maps a float (batch, C, H, W) input, already
normalized, to logits of the same height and width: batch is dynamic, H and W are the size the model was exported
at. Every export is checked by `onnx.checker` and by running ONNX Runtime on a batch of another size than the
example's against the PyTorch module (the parity check).
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from utils.cli import check_threshold
from utils.config import Config
from utils.errors import UserError
from utils.files import write_bytes_atomic

FRAMEWORK = "hand-bone-segmentation"  # the `framework` metadata value that marks a file as ours
METADATA_VERSION = "1"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
EXPORTERS = ("auto", "dynamo", "torchscript")
TORCHSCRIPT_OPSET = 17  # the TorchScript exporter's best-supported opset; the dynamo exporter picks its own
PARITY_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| logit, relative to max(1, max |logit|) (see parity)
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for one file without external data


@dataclass
class OnnxInfo:
    """What a consumer reads from an exported file's metadata (all of it is in `metadata` as strings too)."""
    path: Path
    metadata: dict[str, str]
    config: dict  # the run's full resolved config
    classes: list[str]
    mode: str
    in_channels: int
    input_size: tuple[int, int]
    thresholds: dict[str, float] | None  # multilabel: per class; multiclass: None (argmax)


@dataclass
class ExportResult:
    exporter: str  # "dynamo" or "torchscript"
    opset: int
    max_abs_diff: float
    fallback_reason: str | None  # why the dynamo path was not used, when it was tried and failed


def model_input_size(cfg: Config) -> int:
    """The side of what the network sees: the sliding window when predict.mode is sliding and the window is
    smaller than the resized image (as trainer/predictor.py decides), else data.image_size."""
    window = cfg.predict.window or cfg.data.crop_size
    if cfg.predict.mode == "sliding" and window and window < cfg.data.image_size:
        return window
    return cfg.data.image_size


def export_onnx(model: nn.Module, out: str | Path, input_shape: tuple[int, int, int], metadata: dict[str, str],
                opset: int | None = None, exporter: str = "auto", simplify: bool = False,
                tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    """Export `model` (eval mode, CPU) for (batch, *input_shape) inputs, add `metadata`, check, compare with
    PyTorch and write `out` atomically. A model no exporter handles (or whose ONNX output differs) is a UserError
    naming the operator or the difference."""
    model = model.eval()
    example = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    paths = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    failures: dict[str, str] = {}
    for path in paths:
        try:
            proto = _dynamo_export(model, example, opset) if path == "dynamo" else _torchscript_export(
                model, example, opset)
            _name_batch_axis(proto)
            if simplify:
                proto = _simplify(proto)
            _set_metadata(proto, {**metadata, "exporter": path})
            _check(proto)
            data = proto.SerializeToString()
            diff, allowed = parity(model, data, input_shape, tolerance)
        except Exception as e:  # the exporters, checker and runtime raise many types; each becomes one line
            failures[path] = _export_failure(e)
            continue
        if diff > allowed:
            failures[path] = f"ONNX Runtime's logits differ from PyTorch's by {diff:.2e} (allowed {allowed:.2e})"
            continue
        _set_metadata(proto, {**metadata, "exporter": path, "parity_max_abs_diff": f"{diff:.3e}",
                              "parity_allowed": f"{allowed:.3e}"})
        write_bytes_atomic(out, proto.SerializeToString())
        return ExportResult(path, _opset_of(proto), diff, failures.get("dynamo"))
    reasons = "; ".join(f"{path}: {reason}" for path, reason in failures.items())
    operator = failed_operator(failures.values())
    raise UserError(f"{out}: cannot export {type(model).__name__} to ONNX, "
                    f"{f'operator {operator} ' if operator else ''}({reasons})")


def _dynamo_export(model: nn.Module, example: torch.Tensor, opset: int | None):
    batch = torch.export.Dim.DYNAMIC
    with _quiet():  # the exporter prints its progress and warns about every decomposition
        program = torch.onnx.export(model, (example,), None, dynamo=True, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], opset_version=opset,
                                    dynamic_shapes=({0: batch},), verbose=False)
    return program.model_proto


def _torchscript_export(model: nn.Module, example: torch.Tensor, opset: int | None):
    import onnx

    buffer = io.BytesIO()
    with _quiet():
        torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset or TORCHSCRIPT_OPSET,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _quiet():
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export_failure(error: Exception) -> str:
    """One line from an exporter's error: the dynamo exporter's long message holds its cause after
    'Exception summary'; the TorchScript one names the operator in its first sentence."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(error)).split())
    summary = text.split("## Exception summary", 1)
    if len(summary) == 2:
        text = summary[1].split("⬆️", 1)[0].strip()
        text = re.sub(r"^<class '[\w.]+'>:\s*", "", text)
    return text[:240] or type(error).__name__


def failed_operator(reasons) -> str | None:
    """The operator an exporter's failure messages name (e.g. 'aten::cummax'), or None."""
    patterns = (r"op='([\w.]+)'", r"operator '([\w:.]+)'", r"operator ([\w:.]+)[,\s]", r"\b(aten[.:]{1,2}\w+)")
    for reason in reasons:
        for pattern in patterns:
            found = re.search(pattern, reason)
            if found:
                return found.group(1).replace("aten.", "aten::", 1)
    return None


def _name_batch_axis(proto) -> None:
    """The dynamo exporter calls the dynamic axis 's0' or 's77': name it 'batch' on the input and output."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "batch"


def _simplify(proto):
    import onnxslim

    with _quiet():
        return onnxslim.slim(proto)


def _set_metadata(proto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)


def _check(proto) -> None:
    import onnx

    if proto.ByteSize() > MAX_PROTO_BYTES:
        raise UserError("the exported model is larger than 2 GB, which one ONNX file without external data cannot hold")
    onnx.checker.check_model(proto, full_check=True)


def _opset_of(proto) -> int:
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def parity(model: nn.Module, data: bytes, input_shape: tuple[int, int, int],
           tolerance: float = PARITY_TOLERANCE) -> tuple[float, float]:
    """(max |ONNX Runtime - PyTorch| over the logits of a random batch of 3, the largest difference allowed).
    Allowed: `tolerance` x max(1, max |logit|), or PyTorch's own disagreement between that batch and its images
    one at a time when larger (a randomly initialized deep network can amplify float32 rounding to 1e-3; its ONNX
    graph cannot be held closer to PyTorch than PyTorch holds itself). A batch size other than the example's 2
    also proves the batch axis is dynamic."""
    x = torch.randn(3, *input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = _logits(model(x))
        alone = torch.cat([_logits(model(image[None])) for image in x])
    got = OnnxNetwork(data, torch.device("cpu"))(x)
    allowed = max(tolerance * max(1.0, float(reference.abs().max())), float((alone - reference).abs().max()))
    return float((got - reference).abs().max()), allowed


def _logits(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def read_onnx_info(path: str | Path) -> OnnxInfo:
    """The metadata of an ONNX file written by export_onnx; a missing file, one that is not ONNX or one without
    this framework's metadata (a foreign model) is a one-line UserError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: ONNX file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends for a file that is not ONNX
        raise UserError(f"{path}: not an ONNX file ({type(e).__name__}: {' '.join(str(e).split())[:160]})") from None
    if not proto.ir_version or not proto.graph.input or not proto.graph.output:
        raise UserError(f"{path}: not an ONNX file (no graph inputs and outputs)")
    metadata = {p.key: p.value for p in proto.metadata_props}
    if metadata.get("framework") != FRAMEWORK:
        raise UserError(f"{path}: an ONNX model without this framework's metadata (a foreign model?); "
                        f"export a checkpoint with export.py")
    config = _json_entry(path, metadata, "config")
    classes = _json_entry(path, metadata, "classes")
    thresholds = _json_entry(path, metadata, "thresholds") if "thresholds" in metadata else None
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or not all(dims[1:]):
        raise UserError(f"{path}: input {proto.graph.input[0].name} has shape {dims}, expected (batch, C, H, W) "
                        f"with fixed C, H and W")
    return OnnxInfo(path, metadata, config, classes, metadata.get("task_mode", ""), dims[1], (dims[2], dims[3]),
                    thresholds)


def _json_entry(path: Path, metadata: dict[str, str], key: str):
    if key not in metadata:
        raise UserError(f"{path}: metadata has no {key!r} entry (export it again with export.py)")
    try:
        return json.loads(metadata[key])
    except ValueError:
        raise UserError(f"{path}: metadata {key!r} is not valid JSON") from None


def check_config_fits(info: OnnxInfo, cfg: Config) -> None:
    """Classes, channels and input size of the config a file runs with must be the file's: one line naming the
    difference."""
    classes = cfg.task.classes
    if len(info.classes) != len(classes):
        raise UserError(f"{info.path}: the model predicts {len(info.classes)} classes, task.classes of the config "
                        f"has {len(classes)}")
    if info.classes != classes:
        first = next(i for i, (a, b) in enumerate(zip(info.classes, classes)) if a != b)
        raise UserError(f"{info.path}: class {first} is {info.classes[first]!r} in the model, {classes[first]!r} in "
                        f"task.classes of the config")
    if info.in_channels != cfg.model.in_channels:
        raise UserError(f"{info.path}: the model takes {info.in_channels}-channel images, model.in_channels of the "
                        f"config is {cfg.model.in_channels}")
    size = model_input_size(cfg)
    if info.input_size != (size, size):
        h, w = info.input_size
        again = f"--set predict.window={size}" if size < cfg.data.image_size else f"--image-size {size}"
        raise UserError(f"{info.path}: the model takes {h}x{w} inputs, the config feeds it {size}x{size} "
                        f"(data.image_size, or predict.window when sliding); export it again with {again}")


def stored_thresholds(path: str | Path, classes: list[str]) -> torch.Tensor | None:
    """The per-class thresholds stored in an exported file (multilabel), in `classes` order; None without them."""
    stored = read_onnx_info(path).thresholds
    if stored is None:
        return None
    return torch.tensor([check_threshold(stored.get(c), f"{path}: stored threshold of {c!r}") for c in classes])


class OnnxNetwork:
    """An ONNX Runtime session called like the nn.Module it was exported from: (B, C, H, W) float tensor in,
    logits tensor out, on the input's device. The session gets as many intra-op threads as torch has
    (torch.get_num_threads(), i.e. OMP_NUM_THREADS), so one setting governs both; on a CUDA device it uses
    ONNX Runtime's CUDA provider when the installed build has one."""

    def __init__(self, model: str | Path | bytes, device: torch.device):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only: the CPU provider warns about every unused initializer
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        source = model if isinstance(model, bytes) else str(model)
        self.name = "the exported model" if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as e:  # ORT's Fail/InvalidGraph/... exceptions
            raise UserError(f"{self.name}: ONNX Runtime cannot load it ({' '.join(str(e).split())[:200]})") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = tuple(first.shape[1:])  # (C, H, W)
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            c, h, w = self.input_shape
            raise UserError(f"{self.name}: takes (batch, {c}, {h}, {w}) inputs, got {tuple(x.shape)}; export it "
                            f"again with --image-size for another size")
        array = np.ascontiguousarray(x.detach().float().cpu().numpy())
        out = self.session.run([self.output_name], {self.input_name: array})[0]
        return torch.from_numpy(out).to(x.device)
