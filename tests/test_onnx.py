"""ONNX export and inference through ONNX Runtime: metadata, logit parity with PyTorch, submissions from the .onnx
file against the checkpoint's (both tasks; flip TTA and sliding windows; ensembles), the one-line errors, and the
README model table's "ONNX" column, checked against an export of every listed architecture at 64 px.

Submission parity bound: the CSV written from the ONNX file may differ from the checkpoint's on fewer than
MAX_DIFFERING_PIXELS (0.01%) of its pixels (ONNX Runtime's kernels sum in another order: a pixel whose probability
lies within ~1e-6 of its threshold, or two classes within ~1e-6 of each other for argmax, may flip).

Regenerate the README column after a change of exporter or model zoo: `python -m tests.test_onnx --update-readme`.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import pytest
import torch
from torch import nn

import ensemble
import export
import inference
from models.factory import build_model
from models.onnx_model import OnnxNetwork, export_onnx, failed_operator, read_onnx_info
from tasks.coco.submission import read_trash_submission
from tasks.coco.synthetic import generate as generate_trash
from tasks.handbone.submission import read_submission, read_test_image_sizes
from tests.conftest import ROOT, tiny_overrides
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.inference import ModelMember, load_members
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import ModelConfig, load_config, to_dict
from utils.errors import UserError
from utils.rle import decode_rle

MAX_DIFFERING_PIXELS = 1e-4  # 0.01% of the submission's pixels
LOGIT_TOLERANCE = 1e-4  # max |ONNX Runtime - PyTorch| logit
TRASH = ROOT / "configs" / "trash_demo.yaml"
TRASH_CLASSES = 11
README = ROOT / "README.md"

# README model table row -> the family's smallest member at 64 px: (model.arch, model.encoder, model.params)
ZOO = {
    "FCN-ResNet50 (competition baseline)": ("fcn_resnet50", "", {}),
    "DeepLabV3+ / ResNet50": ("DeepLabV3Plus", "resnet50", {"decoder_channels": 32}),
    "UNet++ / ResNet34": ("UnetPlusPlus", "resnet34", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "SwinUNETR (MONAI, 2-D), 2048 sliding windows": (
        "SwinUNETR", "", {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}),
    "EffiSegNet (Vezakis et al. 2024), b0-b7": ("EffiSegNet", "tu-efficientnet_b0", {"channels": 8}),
    "HRNet-OCR (Yuan et al. 2020), W18-W64": (
        "HRNetOCR", "hrnet_w18_small", {"mid_channels": 32, "key_channels": 16}),
    "UPerNet / ConvNeXt": ("UPerNet", "tu-convnext_atto", {"decoder_channels": 32}),
    "UPerNet / Swin": ("UPerNet", "tu-swin_tiny_patch4_window7_224", {"img_size": 64, "decoder_channels": 32}),
    "UNet++ / HRNet-W64": ("UnetPlusPlus", "tu-hrnet_w18_small", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "UNet++ / MaxViT": ("UnetPlusPlus", "tu-maxvit_pico_rw_256", {"img_size": 64, "decoder_channels": [32, 16, 8, 8, 8]}),
    "UNet++ / EfficientNetV2": ("UnetPlusPlus", "tu-tf_efficientnetv2_b0", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "UNet++ / VGG19": ("UnetPlusPlus", "vgg19", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "SegFormer / MiT": ("Segformer", "mit_b0", {"decoder_segmentation_channels": 32}),
}
ZOO_FAST = {"UPerNet / ConvNeXt"}  # exports in seconds; the rest run with -m slow
ZOO_SIZE = 64


# ------------------------------------------------------------------------------------------- helpers


def differing_fraction(a: Path, b: Path, data_root: Path | None = None, classes: list[str] | None = None) -> float:
    """Share of the submission pixels on which two CSVs disagree: hand-bone RLE masks (decoded at each test
    image's size) or trash label maps (256 x 256)."""
    if classes is None:
        left, right = read_trash_submission(a, TRASH_CLASSES), read_trash_submission(b, TRASH_CLASSES)
        assert list(left) == list(right)
        return sum(int((left[k] != right[k]).sum()) for k in left) / sum(v.size for v in left.values())
    sizes = read_test_image_sizes(data_root)
    left, right = read_submission(a, classes), read_submission(b, classes)
    assert list(left) == list(right) == list(sizes)
    differing = total = 0
    for name, (h, w) in sizes.items():
        for x, y in zip(left[name], right[name]):
            differing += int((decode_rle(x, h, w) != decode_rle(y, h, w)).sum())
            total += h * w
    return differing / total


def positive_pixels(csv: Path, classes: list[str]) -> int:
    """Mask pixels of a hand-bone CSV (the run lengths): a comparison means something only when masks are not
    empty."""
    return sum(int(n) for rles in read_submission(csv, classes).values() for rle in rles for n in rle.split()[1::2])


def calibrate_batchnorm(model: nn.Module, in_channels: int, size: int) -> nn.Module:
    """Running statistics from one random batch of 16, as training would leave them: with the initial ones (mean
    0, variance 1) deep networks grow logits of 1e6, and statistics of a batch of 4 (a few values per channel in the
    deepest layers) leave an EfficientNetV2 amplifying float32 rounding to 1e-3; no comparison holds either to
    1e-4."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: one batch gives its own statistics
    with torch.no_grad():
        model.train()(torch.randn(16, in_channels, size, size, generator=torch.Generator().manual_seed(2)))
    return model.eval()


def logit_difference(model: nn.Module, onnx_file: Path, shape: tuple[int, ...]) -> float:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return float((OnnxNetwork(onnx_file, torch.device("cpu"))(x) - model.eval()(x)).abs().max())


def checkpoint_model(path: Path) -> nn.Module:
    state = load_checkpoint(path)
    from utils.config import from_dict

    model = build_model(from_dict(state["config"]).model, len(state["classes"]))
    model.load_state_dict(state["model"])
    return model.eval()


def cli(script, *args) -> int:
    """An entry script's main() in this process (the model and libraries stay loaded between calls)."""
    return script.main([str(a) for a in args])


def set_args(*overrides: str) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


# ------------------------------------------------------------------------------------------- multilabel (demo)

SLIDING_TTA = ["predict.mode=sliding", "predict.window=32", "predict.tta=hflip"]  # 3 x 3 windows of 32 over 64 px


@pytest.fixture(scope="module")
def demo_run(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny demo checkpoint in a run folder with the files export.py reads beside it: thresholds.json (low
    per-class values, so the one-epoch model's masks are far from empty) and run_info.json."""
    run = tmp_path_factory.mktemp("onnx_run")
    shutil.copy(tiny_checkpoint, run / "best.pt")
    classes = load_checkpoint(tiny_checkpoint)["classes"]
    thresholds = {c: round(0.010 + 0.001 * (i % 4), 3) for i, c in enumerate(classes)}
    (run / "thresholds.json").write_text(json.dumps({"thresholds": thresholds, "val_dice": 0.1}))
    (run / "run_info.json").write_text(json.dumps({"git": {"commit": "0123abc", "dirty": True}}))
    return run


@pytest.fixture(scope="module")
def demo_onnx(demo_run) -> Path:
    """Exported for flip TTA and 32 px sliding windows (the network's input is the window)."""
    out = demo_run / "model.onnx"
    assert cli(export, "--checkpoint", demo_run / "best.pt", "--out", out, *set_args(*SLIDING_TTA)) == 0
    return out


@pytest.fixture(scope="module")
def demo_submissions(demo_run, demo_onnx, dataset_root, tmp_path_factory) -> tuple[Path, Path]:
    """The checkpoint's CSV with the same settings given as flags, and the ONNX file's with none (its metadata)."""
    out = tmp_path_factory.mktemp("onnx_subs")
    common = ["--data", dataset_root, "--workers", 0, "--no-progress"]
    assert cli(inference, "--checkpoint", demo_run / "best.pt", "--out", out / "pt.csv", *common, "--thresholds",
               demo_run / "thresholds.json", "--tta", "hflip", *set_args(*SLIDING_TTA[:2])) == 0
    assert cli(inference, "--checkpoint", demo_onnx, "--out", out / "onnx.csv", *common) == 0
    return out / "pt.csv", out / "onnx.csv"


def test_metadata_carries_what_a_consumer_needs(demo_run, demo_onnx):
    import onnx

    info = read_onnx_info(demo_onnx)
    meta = info.metadata
    state = load_checkpoint(demo_run / "best.pt")
    cfg = state["config"]
    thresholds = json.loads((demo_run / "thresholds.json").read_text())["thresholds"]
    assert (meta["task_mode"], meta["task_layout"], meta["task_submission"]) == ("multilabel", "handbone", "handbone")
    assert info.classes == state["classes"] and len(info.classes) == 29
    assert info.input_size == (32, 32) and info.in_channels == 1 and json.loads(meta["input_size"]) == [32, 32]
    assert (float(meta["mean"]), float(meta["std"])) == (cfg["data"]["mean"], cfg["data"]["std"])
    assert (meta["activation"], meta["decision"]) == ("sigmoid", "threshold")
    assert info.thresholds == thresholds and meta["thresholds_source"] == str(demo_run / "thresholds.json")
    assert (meta["predict_mode"], meta["tta"], meta["image_size"], meta["window"]) == ("sliding", "hflip", "64", "32")
    assert info.config["predict"] == {**cfg["predict"], "mode": "sliding", "window": 32, "tta": "hflip"}
    assert info.config["model"] == cfg["model"]
    assert meta["run_commit"] == "0123abc+dirty" and len(meta["framework_version"]) >= 40
    assert meta["exporter"] in ("dynamo", "torchscript") and float(meta["parity_max_abs_diff"]) < LOGIT_TOLERANCE
    graph = onnx.load(str(demo_onnx)).graph
    assert [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", 1, 32, 32]


def test_onnx_logits_match_pytorch(demo_run, demo_onnx):
    assert logit_difference(checkpoint_model(demo_run / "best.pt"), demo_onnx, (3, 1, 32, 32)) < LOGIT_TOLERANCE


def test_submission_from_onnx_matches_the_checkpoint(demo_submissions, dataset_root, classes):
    """Sliding windows, flip TTA and per-class thresholds from the file's metadata, against the same settings
    given to the checkpoint as flags."""
    pt, onnx_csv = demo_submissions
    assert positive_pixels(pt, classes) > 10_000
    assert differing_fraction(pt, onnx_csv, dataset_root, classes) < MAX_DIFFERING_PIXELS


def test_onnx_members_in_ensembles(demo_run, demo_onnx, demo_submissions, dataset_root, classes, tmp_path):
    """A normal member (name, config, predictor, weight), mixed freely with checkpoints."""
    members, runtime = load_members([demo_onnx], [2.0])
    assert isinstance(members[0], ModelMember) and members[0].weight == 2.0 and members[0].name == str(demo_onnx)
    assert members[0].cfg.predict.mode == "sliding" and runtime.device.type == "cpu"
    mixed = tmp_path / "mixed.csv"
    assert cli(ensemble, "--checkpoints", demo_run / "best.pt", demo_onnx, "--out", mixed, "--data", dataset_root,
               "--thresholds", demo_run / "thresholds.json", "--tta", "hflip", *set_args(*SLIDING_TTA[:2]),
               "--workers", 0, "--no-progress") == 0
    pt, _ = demo_submissions
    assert differing_fraction(pt, mixed, dataset_root, classes) < MAX_DIFFERING_PIXELS


# ------------------------------------------------------------------------------------------- multiclass (trash)


@pytest.fixture(scope="module")
def trash_run(tmp_path_factory) -> Path:
    from tests.test_coco_task import trash_overrides

    tmp = tmp_path_factory.mktemp("onnx_trash")
    root = generate_trash(tmp / "ds", train=16, test=3, size=64, seed=2, progress=False)
    cfg = load_config(TRASH, trash_overrides(root, tmp / "cache") + ["trainer.epochs=1"])
    Trainer(cfg, tmp / "run", setup_runtime(cfg.trainer), progress=False).fit()
    return tmp / "run"


def test_multiclass_export_and_submission(trash_run, tmp_path):
    """Exported at another size than trained (--image-size) and simplified (--simplify)."""
    onnx_file = tmp_path / "trash.onnx"
    assert cli(export, "--checkpoint", trash_run / "best.pt", "--out", onnx_file, "--image-size", 48,
               "--simplify") == 0
    info = read_onnx_info(onnx_file)
    assert (info.mode, info.metadata["task_layout"], info.metadata["task_submission"]) == ("multiclass", "coco", "trash")
    assert (info.metadata["activation"], info.metadata["decision"]) == ("softmax", "argmax")
    assert info.thresholds is None and "threshold" not in info.metadata
    assert info.in_channels == 3 and info.input_size == (48, 48) and len(info.classes) == TRASH_CLASSES
    assert info.config["data"]["image_size"] == 48
    assert logit_difference(checkpoint_model(trash_run / "best.pt"), onnx_file, (2, 3, 48, 48)) < LOGIT_TOLERANCE

    for model, name in ((trash_run / "best.pt", "pt"), (onnx_file, "onnx")):
        assert cli(inference, "--checkpoint", model, "--out", tmp_path / f"{name}.csv", "--save-masks",
                   tmp_path / f"{name}_masks", "--workers", 0, "--no-progress", "--set", "data.image_size=48") == 0
    assert differing_fraction(tmp_path / "pt.csv", tmp_path / "onnx.csv") < MAX_DIFFERING_PIXELS
    pngs = sorted((tmp_path / "pt_masks").rglob("*.png"))
    assert len(pngs) == 3
    differing = sum(int((cv2.imread(str(p), cv2.IMREAD_UNCHANGED) != cv2.imread(
        str(tmp_path / "onnx_masks" / p.relative_to(tmp_path / "pt_masks")), cv2.IMREAD_UNCHANGED)).sum()) for p in pngs)
    assert differing / (3 * 64 * 64) < MAX_DIFFERING_PIXELS

    with pytest.raises(UserError, match=r"takes 48x48 inputs, the config feeds it 32x32 .*--image-size 32"):
        cli(inference, "--checkpoint", onnx_file, "--out", tmp_path / "x.csv", "--set", "data.image_size=32")
    with pytest.raises(UserError, match="multiclass predicts by argmax, without thresholds"):
        cli(export, "--checkpoint", trash_run / "best.pt", "--out", tmp_path / "t.onnx", "--thresholds",
            tmp_path / "any.json")


# ------------------------------------------------------------------------------------------- bad input


def test_bad_input_is_a_one_line_error(demo_onnx, dataset_root, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def refused(match, *args):
        with pytest.raises(UserError, match=match) as error:
            cli(inference, *args, "--out", tmp_path / "x.csv", "--data", dataset_root, "--no-progress")
        assert "\n" not in str(error.value)

    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    refused(r"notes\.onnx: not an ONNX file", "--checkpoint", text)
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 32, 32])])
    onnx.save(helper.make_model(graph), str(foreign))
    refused(r"foreign\.onnx: an ONNX model without this framework's metadata", "--checkpoint", foreign)
    refused(r"ONNX file not found", "--checkpoint", tmp_path / "missing.onnx")
    refused(r"model\.onnx: the model predicts 29 classes, task\.classes of the config has 11", "--checkpoint",
            demo_onnx, "--config", TRASH)
    refused(r"model\.onnx: the model takes 32x32 inputs, the config feeds it 48x48 .*--set predict\.window=48",
            "--checkpoint", demo_onnx, "--set", "predict.window=48")
    with pytest.raises(UserError, match=r"foreign\.onnx"):
        cli(ensemble, "--checkpoints", demo_onnx, foreign, "--out", tmp_path / "e.csv", "--data", dataset_root)
    with pytest.raises(UserError, match=r"takes \(batch, 1, 32, 32\) inputs, got \(1, 1, 64, 64\)"):
        OnnxNetwork(demo_onnx, torch.device("cpu"))(torch.zeros(1, 1, 64, 64))
    with pytest.raises(UserError, match=r"name the file \.onnx"):
        cli(export, "--checkpoint", tmp_path / "best.pt", "--out", tmp_path / "model.bin")


def test_cli_prints_one_line(tmp_path):
    import subprocess

    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    done = subprocess.run([sys.executable, "inference.py", "--checkpoint", str(text), "--out", str(tmp_path / "x.csv")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and "not an ONNX file" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


CUMMAX_NET = '''
import torch
from torch import nn


class CumMaxNet(nn.Module):
    def __init__(self, in_channels, classes):
        super().__init__()
        self.head = nn.Conv2d(in_channels, classes, 1)

    def forward(self, x):
        return torch.cummax(self.head(x), dim=-1).values
'''


def test_export_refuses_a_model_no_exporter_handles_naming_the_operator(tiny_config, tmp_path):
    plugin = tmp_path / "nets.py"
    plugin.write_text(CUMMAX_NET)
    cfg = tiny_config(f"model.arch={plugin}:CumMaxNet", "model.encoder=none", "model.params={}")
    model = build_model(cfg.model, len(cfg.task.classes))
    save_checkpoint({"model": model.state_dict(), "config": to_dict(cfg), "classes": cfg.task.classes},
                    tmp_path / "best.pt")
    with pytest.raises(UserError, match=r"model\.onnx: cannot export CumMaxNet to ONNX, operator aten::cummax "
                                        r"\(dynamo: .*; torchscript: .*\)") as error:
        cli(export, "--checkpoint", tmp_path / "best.pt", "--out", tmp_path / "model.onnx")
    assert "\n" not in str(error.value) and not list(tmp_path.glob("model.onnx*"))


# ------------------------------------------------------------------------------------------- the model zoo


def zoo_cell(name: str, folder: Path) -> str:
    """What the README's ONNX column says of a model row, found by exporting the family's smallest member."""
    arch, encoder, params = ZOO[name]
    torch.manual_seed(0)
    model = calibrate_batchnorm(build_model(ModelConfig(arch=arch, encoder=encoder, params=params), 29), 1, ZOO_SIZE)
    try:
        result = export_onnx(model, folder / "model.onnx", (1, ZOO_SIZE, ZOO_SIZE), {"framework": "zoo test"})
    except UserError as e:
        operator = failed_operator([str(e)])
        return f"no: operator {operator}" if operator else f"no: {str(e).split(' to ONNX, ', 1)[1][:80]}"
    if result.exporter == "dynamo":
        return "yes (dynamo)"
    return f"yes (TorchScript; dynamo fails at {failed_operator([result.fallback_reason]) or 'an unnamed step'})"


def readme_table() -> tuple[list[str], int, int]:
    """README lines, the index of the model table's header line and the index of its ONNX column (-1: none)."""
    lines = README.read_text().splitlines()
    start = lines.index("## Models")
    header = next(i for i in range(start, len(lines)) if lines[i].startswith("| model |"))
    columns = [c.strip() for c in lines[header].strip().strip("|").split("|")]
    return lines, header, columns.index("ONNX") if "ONNX" in columns else -1


def readme_rows() -> dict[str, list[str]]:
    lines, header, _ = readme_table()
    rows = {}
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_readme_model_table_rows_all_have_an_onnx_check():
    _, _, column = readme_table()
    assert column >= 0, "README's model table has no ONNX column: python -m tests.test_onnx --update-readme"
    assert set(readme_rows()) == set(ZOO)


@pytest.mark.parametrize("name", [pytest.param(n, id=n.split(" (")[0], marks=() if n in ZOO_FAST else pytest.mark.slow)
                                  for n in ZOO])
def test_readme_onnx_column_is_what_the_export_finds(name, tmp_path):
    _, _, column = readme_table()
    found = zoo_cell(name, tmp_path)
    assert readme_rows()[name][column] == found, (
        f"README's ONNX column is stale for {name!r}: the export finds {found!r}; run python -m tests.test_onnx "
        f"--update-readme")


def update_readme() -> None:
    """Export every row's model and write what was found into the README's ONNX column (added if missing)."""
    import tempfile

    lines, header, column = readme_table()
    with tempfile.TemporaryDirectory() as tmp:
        cells = {}
        for name in ZOO:
            cells[name] = zoo_cell(name, Path(tmp))
            print(f"{name}: {cells[name]}", flush=True)
    if column < 0:
        lines[header] += " ONNX |"
        lines[header + 1] += "---|"
    for i in range(header + 2, len(lines)):
        if not lines[i].startswith("|"):
            break
        cells_of_row = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        if column < 0:
            cells_of_row.append("")
        cells_of_row[column] = cells[cells_of_row[0]]
        lines[i] = "| " + " | ".join(cells_of_row) + " |"
    README.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- the models


def small_config(name: str, task: str, root: Path, cache: Path):
    """A shipped model config at 64 px (32 px for trash) on the tiny data, float32 (ONNX Runtime runs float32;
    a checkpoint under bf16 autocast differs by bf16's rounding), one epoch."""
    model = load_config(ROOT / "configs" / f"{name}.yaml").model
    model_overrides = [f"model.arch={model.arch}", f"model.encoder={model.encoder}",
                       f"model.params={json.dumps(model.params)}"]
    common = ["trainer.epochs=1", 'trainer.amp="off"', "trainer.compile=false", "data.num_workers=0",
              "data.persistent_workers=false", "transforms.gpu=[]"]
    if task == "handbone":
        overrides = [o for o in tiny_overrides(root, cache) if not o.startswith("model.")] + model_overrides + common
        return load_config(ROOT / "configs" / f"{name}.yaml", overrides)
    from tests.test_coco_task import trash_overrides

    overrides = [o for o in trash_overrides(root, cache) if not o.startswith("model.")] + model_overrides + common
    return load_config(TRASH, overrides)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["handbone", "trash"])
@pytest.mark.parametrize("name", ["unetpp_lion_1024", "deeplabv3plus_1024", "baseline_fcn_r50_512"])
def test_shipped_configs_export_with_parity(name, task, dataset_root, tmp_path, classes):
    root = dataset_root if task == "handbone" else generate_trash(tmp_path / "ds", train=16, test=3, size=64, seed=2,
                                                                  progress=False)
    cfg = small_config(name, task, root, tmp_path / "cache")
    Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False).fit()
    best, onnx_file = tmp_path / "run" / "best.pt", tmp_path / "model.onnx"
    assert cli(export, "--checkpoint", best, "--out", onnx_file) == 0
    size, channels = cfg.data.image_size, cfg.model.in_channels
    assert logit_difference(checkpoint_model(best), onnx_file, (2, channels, size, size)) < LOGIT_TOLERANCE
    flags = ["--workers", 0, "--no-progress"] + (["--threshold", 0.02] if task == "handbone" else [])
    for model, csv in ((best, "pt.csv"), (onnx_file, "onnx.csv")):
        assert cli(inference, "--checkpoint", model, "--out", tmp_path / csv, *flags) == 0
    if task == "handbone":
        assert positive_pixels(tmp_path / "pt.csv", classes) > 0
        fraction = differing_fraction(tmp_path / "pt.csv", tmp_path / "onnx.csv", root, classes)
    else:
        fraction = differing_fraction(tmp_path / "pt.csv", tmp_path / "onnx.csv")
    assert fraction < MAX_DIFFERING_PIXELS


if __name__ == "__main__" and sys.argv[1:] == ["--update-readme"]:
    update_readme()
