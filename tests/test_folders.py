"""Image and mask folders (task.format: folders, issue #18): Pascal VOC (split lists, palette PNGs with void),
MMSegmentation ({split} folders) and flat sets (k-fold; test = images without a mask) in multiclass, binary and
multilabel mode; training, the masks submission (--check, hard vote), pseudo-labels, a plug-in layout, and every
bad input as a one-line error naming the file."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from data.cache import open_cache
from losses.factory import build_loss
from modes.miou import ConfusionMatrix
from tasks.folders.settings import voc_palette
from tasks.folders.synthetic import generate
from tasks.registry import build_task
from tests.conftest import ROOT
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import LossConfig, LossTerm, load_config
from utils.errors import ConfigError, DataError

VOC = ROOT / "configs" / "voc_demo.yaml"
SMALL = ["data.image_size=32", "data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0",
         "data.cache_workers=1", "data.n_splits=3", "model.arch=Unet", "model.encoder=resnet18",
         "model.params={encoder_depth: 3, decoder_channels: [16, 8, 8]}", "trainer.epochs=1", "trainer.val_every=1",
         "transforms.gpu=[]", "scheduler.warmup_epochs=0"]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """10 train, 3 val and 3 test images of 29..48 px, classes 1..3 drawn."""
    return generate(tmp_path_factory.mktemp("voc") / "VOC2012", train=10, val=3, test=3, size=48, seed=4,
                    num_classes=4, progress=False)


@pytest.fixture(scope="module")
def voc_run(voc_root, tmp_path_factory) -> Path:
    """The run folder of one epoch on voc_root."""
    tmp = tmp_path_factory.mktemp("vocrun")
    fit(voc_config(voc_root, tmp), tmp / "run")
    return tmp / "run"


def voc_config(root, tmp_path, *extra):
    return load_config(VOC, [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic=null",
                             *SMALL, *extra])


def fit(cfg, run_dir) -> dict:
    return Trainer(cfg, run_dir, setup_runtime(cfg.trainer), progress=False).fit()


def cli(module: str, *args) -> int:
    """An entry script's main() in this process (its imports are already loaded), as run_main would run it."""
    main = __import__(module).main
    return main([*map(str, args), "--no-progress"])


def blobs(h: int, w: int, rng, count: int) -> list[np.ndarray]:
    """`count` random filled discs as (H, W) bool masks."""
    out = []
    for _ in range(count):
        mask = np.zeros((h, w), np.uint8)
        r = int(rng.integers(4, max(5, min(h, w) // 3)))
        cv2.circle(mask, (int(rng.integers(r, w - r)), int(rng.integers(r, h - r))), r, 1, -1)
        out.append(mask.astype(bool))
    return out


def flat_set(root: Path, mode: str, labelled: int = 9, test: int = 2, classes: int = 2, seed: int = 0) -> Path:
    """images/<stem>.png (varied sizes) with masks/<stem>.png (binary: 0/255; multiclass: gray labels) or
    masks/<class>/<stem>.png (multilabel: 0/1); the test images have no mask."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    for i in range(labelled + test):
        h, w = int(rng.integers(28, 44)), int(rng.integers(28, 44))
        image = np.full((h, w, 3), 60, np.uint8) + rng.integers(0, 20, (h, w, 3), dtype=np.uint8)
        planes = blobs(h, w, rng, classes)
        for c, plane in enumerate(planes):
            image[plane] = (200 if c == 0 else 60, 60 if c == 0 else 200, 120)
        cv2.imwrite(str(root / "images" / f"im{i:02d}.png"), image)
        if i >= labelled:
            continue
        if mode == "multilabel":
            for c, plane in enumerate(planes):
                (root / "masks" / f"c{c}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(plane.astype(np.uint8), "L").save(root / "masks" / f"c{c}" / f"im{i:02d}.png")
            continue
        (root / "masks").mkdir(exist_ok=True)
        if mode == "binary":
            values = planes[0].astype(np.uint8) * 255
        else:
            values = np.zeros((h, w), np.uint8)
            for c, plane in enumerate(planes):
                values[plane] = c + 1
        Image.fromarray(values, "L").save(root / "masks" / f"im{i:02d}.png")
    return root


def flat_config(root, tmp_path, mode: str, classes: list[str], *extra):
    return load_config(VOC, [f"data.root={root}", f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic=null",
                             "data.split=kfold", "task.folders={}", f"task.mode={mode}", f"task.classes={classes}",
                             "loss.terms=[{name: dice, weight: 1.0}]", *SMALL, *extra])


# ------------------------------------------------------------------------------------------- end to end


def test_voc_multiclass_trains_predicts_palette_masks_and_checks(voc_root, voc_run, tmp_path):
    record = json.loads((voc_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["val_miou"] <= 1 and 0 <= record["val_pixel_accuracy"] <= 1
    assert len(record["val_miou_per_class"]) == 21

    out = tmp_path / "sub"
    assert cli("inference", "--checkpoint", voc_run / "best.pt", "--out", out, "--workers", "0") == 0
    stems = (voc_root / "ImageSets/Segmentation/test.txt").read_text().split()
    assert sorted(p.name for p in out.iterdir()) == [f"{s}.png" for s in stems]
    first_mask = Image.open(next((voc_root / "SegmentationClass").iterdir()))
    for stem in stems:
        png = Image.open(out / f"{stem}.png")
        assert png.mode == "P" and png.getpalette() == first_mask.getpalette()  # the set's palette kept
        assert png.getpalette()[:63] == [v for colour in voc_palette(21) for v in colour]
        assert png.size == Image.open(voc_root / "JPEGImages" / f"{stem}.jpg").size
        assert np.asarray(png).max() < 21  # classes only, no void
    assert cli("inference", "--check", out, "--data", voc_root, "--config", VOC) == 0

    # a wrong folder: a mask missing, one of the wrong size, a stray file -> exit 1, each problem named
    bad = Path(shutil.copytree(out, tmp_path / "bad"))
    (bad / f"{stems[0]}.png").unlink()
    Image.fromarray(np.zeros((5, 7), np.uint8), "L").save(bad / f"{stems[1]}.png")
    (bad / "extra.png").write_bytes((out / f"{stems[2]}.png").read_bytes())
    assert cli("inference", "--check", bad, "--data", voc_root, "--config", VOC) == 1

    # soft vote of the model with itself, and hard vote of a folder with itself: the model's own masks
    soft, voted = tmp_path / "soft", tmp_path / "voted"
    best = voc_run / "best.pt"
    assert cli("ensemble", "--checkpoints", best, best, "--out", soft, "--workers", "0") == 0
    assert cli("ensemble", "--csvs", out, soft, out, "--config", VOC, "--data", voc_root, "--out", voted) == 0
    for stem in stems:
        truth = np.asarray(Image.open(out / f"{stem}.png"))
        assert np.array_equal(np.asarray(Image.open(soft / f"{stem}.png")), truth)
        assert np.array_equal(np.asarray(Image.open(voted / f"{stem}.png")), truth)


def test_binary_flat_set_kfold_dice_iou_and_0_255_masks(tmp_path):
    root = flat_set(tmp_path / "lesions", "binary", labelled=9, test=2, classes=1)
    cfg = flat_config(root, tmp_path, "binary", ["lesion"], "loss.terms=[{name: bce, weight: 1.0}, "
                      "{name: dice, weight: 1.0}]")
    result = fit(cfg, tmp_path / "run")
    assert result["metric"] == "dice"
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= record["val_iou"] <= record["val_dice"] <= 1  # IoU <= Dice per image
    out = tmp_path / "sub"
    assert cli("inference", "--checkpoint", tmp_path / "run" / "best.pt", "--out", out, "--workers", "0",
               "--threshold", "0.3") == 0
    assert sorted(p.name for p in out.iterdir()) == ["im09.png", "im10.png"]
    for name in ("im09", "im10"):
        png = Image.open(out / f"{name}.png")
        assert png.mode == "L" and set(np.unique(np.asarray(png))) <= {0, 255}  # the truth's 0/255
        assert png.size == Image.open(root / "images" / f"{name}.png").size
    submission = build_task(cfg).submission
    assert submission.validate(out, root) == []
    # hard vote of binary folders: pixels where at least --min-votes agree
    empty = Path(shutil.copytree(out, tmp_path / "empty"))
    for png in empty.iterdir():
        Image.fromarray(np.zeros_like(np.asarray(Image.open(png))), "L").save(png)
    assert "at least 1 agree" in submission.hard_vote([out, empty], 1, tmp_path / "any", root)
    assert "at least 2 agree" in submission.hard_vote([out, empty], 2, tmp_path / "both", root)
    for name in ("im09", "im10"):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "any" / f"{name}.png")),
                              np.asarray(Image.open(out / f"{name}.png")))
        assert not np.asarray(Image.open(tmp_path / "both" / f"{name}.png")).any()


def test_multilabel_class_folders_train_and_predict_per_class_masks(tmp_path):
    root = flat_set(tmp_path / "ml", "multilabel", labelled=9, test=2, classes=2)
    cfg = flat_config(root, tmp_path, "multilabel", ["c0", "c1"])
    fit(cfg, tmp_path / "run")
    out = tmp_path / "sub"
    assert cli("inference", "--checkpoint", tmp_path / "run" / "best.pt", "--out", out, "--workers", "0") == 0
    for c in ("c0", "c1"):
        assert sorted(p.name for p in (out / c).iterdir()) == ["im09.png", "im10.png"]
        assert set(np.unique(np.asarray(Image.open(out / c / "im09.png")))) <= {0, 1}  # the truth's 0/1


def test_mmseg_preset_splits_by_folders(tmp_path):
    root = tmp_path / "mm"
    rng = np.random.default_rng(1)
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        (root / "img_dir" / split).mkdir(parents=True)
        (root / "ann_dir" / split).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / "img_dir" / split / f"{split}{i}.jpg"), np.zeros((20, 30, 3), np.uint8))
            if split != "test":
                labels = (blobs(20, 30, rng, 1)[0]).astype(np.uint8)
                Image.fromarray(labels, "L").save(root / "ann_dir" / split / f"{split}{i}.png")
    cfg = load_config(VOC, [f"data.root={root}", "task.folders={preset: mmseg}", "task.classes=[bg, thing]",
                            "task.folders.palette=null", "data.synthetic=null"])
    layout = build_task(cfg).layout
    samples, train, val, warnings = layout.fold(cfg.data, seed=0)
    assert [samples[i].key for i in train] == ["train0", "train1", "train2", "train3"]
    assert [samples[i].key for i in val] == ["val0", "val1"] and warnings == []
    assert [s.key for s in layout.test_samples(root)] == ["test0", "test1"]


def test_flat_set_kfold_is_stratified_and_test_is_unmasked(tmp_path):
    root = flat_set(tmp_path / "flat", "multiclass", labelled=9, test=3, classes=2)
    cfg = flat_config(root, tmp_path, "multiclass", ["bg", "a", "b"])
    layout = build_task(cfg).layout
    folds = [layout.fold(cfg.data, seed=0) for cfg.data.fold in range(3)]
    vals = sorted(folds[0][0][i].key for f in folds for i in f[2])
    assert vals == [f"im{i:02d}" for i in range(9)]  # every labelled image validated once
    assert [s.key for s in layout.test_samples(root)] == ["im09", "im10", "im11"]
    with pytest.raises(ConfigError, match=r"data\.split: task\.format 'folders' splits by kfold, not 'files'"):
        build_task(flat_config(root, tmp_path, "multiclass", ["bg", "a", "b"], "data.split=files"))


# ----------------------------------------------------------------------------------------------- bad input


def _scan_error(cfg, match: str):
    with pytest.raises(DataError, match=match) as info:
        layout = build_task(cfg).layout
        samples, *_ = layout.fold(cfg.data, seed=0)
        for sample in samples:
            layout.process(sample, None)
    assert "\n" not in str(info.value)


def test_bad_folders_are_one_line_errors_naming_the_file(voc_root, tmp_path):
    def copy():
        return Path(shutil.copytree(voc_root, tmp_path / f"c{len(list(tmp_path.iterdir()))}"))

    first = (voc_root / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    root = copy()  # a mask whose size differs from its image
    Image.open(root / "SegmentationClass" / f"{first}.png").crop((0, 0, 10, 10)).save(
        root / "SegmentationClass" / f"{first}.png")
    _scan_error(voc_config(root, tmp_path), rf"{first}\.png: mask is 10x10 but its image .*{first}\.jpg is \d+x\d+")

    root = copy()  # a label that is neither a class nor void
    mask = Image.open(root / "SegmentationClass" / f"{first}.png")
    values = np.asarray(mask).copy()
    values[0, 0] = 77
    fixed = Image.fromarray(values, "P")
    fixed.putpalette(mask.getpalette())
    fixed.save(root / "SegmentationClass" / f"{first}.png")
    _scan_error(voc_config(root, tmp_path), rf"{first}\.png: label value 77 is neither a class \(0\.\.20\) nor void")

    root = copy()  # an RGB mask with a colour in no palette entry
    rgb = np.asarray(Image.open(root / "SegmentationClass" / f"{first}.png").convert("RGB")).copy()
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb, "RGB").save(root / "SegmentationClass" / f"{first}.png")
    _scan_error(voc_config(root, tmp_path), rf"{first}\.png: colour \[1, 2, 3\] \(1 pixels\) is in no entry")

    root = copy()  # an image of the train split without its mask
    (root / "SegmentationClass" / f"{first}.png").unlink()
    _scan_error(voc_config(root, tmp_path), rf"{first}")

    root = copy()  # a mask without an image
    (root / "JPEGImages" / f"{first}.jpg").unlink()
    _scan_error(voc_config(root, tmp_path), rf"{first}\.png: mask without an image")

    root = copy()  # a listed stem missing on disk
    with open(root / "ImageSets/Segmentation/val.txt", "a") as f:
        f.write("2012_999999\n")
    _scan_error(voc_config(root, tmp_path), "2012_999999")

    root = flat_set(tmp_path / "flat", "multiclass", labelled=4, test=0)  # two images with one stem
    shutil.copy(root / "images" / "im01.png", root / "images" / "im01.jpg")
    _scan_error(flat_config(root, tmp_path, "multiclass", ["bg", "a", "b"]),
                r"im01\.(jpg|png): has the same stem 'im01' as")


def test_binary_mask_values_and_class_count(tmp_path):
    root = flat_set(tmp_path / "b", "binary", labelled=4, test=0, classes=1)
    mask = np.asarray(Image.open(root / "masks" / "im00.png")).copy()
    mask[0, 0] = 128
    Image.fromarray(mask, "L").save(root / "masks" / "im00.png")
    _scan_error(flat_config(root, tmp_path, "binary", ["lesion"]), r"im00\.png: value\(s\) 128 in a binary mask")
    with pytest.raises(ConfigError, match="binary mode segments one foreground class, got 2"):
        build_task(flat_config(root, tmp_path, "binary", ["a", "b"]))
    with pytest.raises(ConfigError, match=r"task\.mode: 'binary' does not fit task\.format 'handbone'"):
        build_task(load_config(ROOT / "configs" / "demo.yaml", ["task.mode=binary", "task.classes=[x]"]))


def test_multilabel_class_folder_missing_a_mask(tmp_path):
    root = flat_set(tmp_path / "ml", "multilabel", labelled=4, test=0, classes=2)
    (root / "masks" / "c1" / "im02.png").unlink()
    _scan_error(flat_config(root, tmp_path, "multilabel", ["c0", "c1"]), r"c1/im02\.png: missing")


# ------------------------------------------------------------------------------------------------- void


def test_void_pixels_change_no_loss_and_no_score():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :2] = 255
    loss = build_loss(LossConfig(terms=[LossTerm("ce", 1.0), LossTerm("dice", 1.0)]),
                      "multiclass", 255)
    changed = logits.clone()
    changed[:, :, :2] = torch.randn(2, 3, 2, 8) * 10  # only the void rows' logits differ
    assert torch.allclose(loss(logits, target), loss(changed, target))
    matrix = ConfusionMatrix(3, "cpu")
    matrix.update(torch.zeros(2, 8, 8, dtype=torch.long), target)
    assert int(matrix.matrix.sum()) == 2 * 6 * 8  # void pixels left out


def test_void_reaches_cache_presence_and_a_term_without_ignore_index_is_refused(voc_root, tmp_path):
    cfg = voc_config(voc_root, tmp_path)
    task = build_task(cfg)
    samples, train, _, _ = task.layout.fold(cfg.data, seed=0)
    cache = open_cache([samples[i] for i in train], task.layout, cfg.data.image_size, cfg.data.cache_dir,
                       progress=False, workers=0)
    assert any((cache.labels(i) == 255).any() for i in range(len(cache)))  # void kept in the cache
    presence = cache.class_presence()
    assert presence.shape == (len(train), 21) and presence[:, 4:].sum() == 0  # 255 counts for no class
    plugin = tmp_path / "my_loss.py"
    plugin.write_text("def MyLoss():\n    return lambda logits, target: logits.mean()\n")
    with pytest.raises(ConfigError, match=r"loss\.terms\[0\]\.name: '.*my_loss\.py:MyLoss' takes no ignore_index"):
        build_loss(LossConfig(terms=[LossTerm(f"{plugin}:MyLoss", 1.0)]), "multiclass", 255)
    assert build_loss(LossConfig(terms=[LossTerm(f"{plugin}:MyLoss", 1.0)]), "multiclass", None) is not None


# ------------------------------------------------------------------------------------- pseudo and plug-in


def test_analysis_report_and_a_sweep_of_a_voc_set(voc_root, voc_run, tmp_path):
    """The report and a campaign ask the task, never the layout: a VOC run's report scores in mIoU with VOC's class
    names, and a queued folders config runs as a sweep trial whose table column is val_miou."""
    assert cli("analyze", "--run", voc_run, "--worst", 2, "--cleansing", 2) == 0
    report = voc_run / "report"
    page = (report / "index.html").read_text()
    best = max(json.loads(line)["val_miou"] for line in (voc_run / "metrics.jsonl").read_text().splitlines()
               if "val_miou" in line)
    assert re.search(r"id='best-miou'>([0-9.]+)<", page).group(1) == f"{best:.4f}"
    assert "aeroplane" in page and "threshold" not in page.lower()
    for name in ("confusion.png", "iou_per_class.png", "worst_00.png", "cleansing_00.png"):
        assert (report / name).stat().st_size > 0, name

    config = tmp_path / "voc_tiny.yaml"
    config.write_text(f"_base_: [{VOC}]\nname: voc_tiny\n")
    sets = [arg for item in [f"data.root={voc_root}", f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic=null",
                             *SMALL] for arg in ("--set", item)]
    out = tmp_path / "campaign"
    sweep = __import__("sweep").main  # no --no-progress flag: trials show no bars unless --progress
    assert sweep([*map(str, ["--queue", config, "--study", "voc", "--out", out, *sets])]) == 0
    records = [json.loads(line) for line in (out / "trial-0" / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= records[-1]["val_miou"] <= 1
    assert sweep(["--report", "voc", "--storage", f"sqlite:///{out / 'study.db'}", "--out", str(out)]) == 0
    table = (out / "report.md").read_text()
    assert "val_miou" in table and "voc_tiny" in table


def test_pseudo_labels_write_a_folders_set_that_trains(voc_root, voc_run, tmp_path):
    out = tmp_path / "pseudo"
    assert cli("pseudo_label", "--checkpoints", voc_run / "best.pt", "--out", out, "--min-confidence", "0",
               "--workers", "0") == 0
    stems = (voc_root / "ImageSets/Segmentation/test.txt").read_text().split()
    assert sorted(p.stem for p in (out / "masks").iterdir()) == stems
    assert Image.open(out / "masks" / f"{stems[0]}.png").mode == "P"
    assert json.loads((out / "pseudo_labels.json").read_text())["kept"] == stems
    result = fit(voc_config(voc_root, tmp_path, f"data.pseudo_roots=[{out}]"), tmp_path / "run2")
    assert result["epochs"] == 1


PLUGIN = '''
"""A plug-in layout: every image of ROOT/pics/*.png with its mask ROOT/labels/<stem>.png (0 background, 1 object)."""
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.images import read_gray, resize_image


@dataclass(frozen=True)
class Sample:
    key: str
    image: Path
    annotation: Path
    group: str


class MyLayout:
    name = "mine"
    channels = 1
    label_kind = "map"
    modes = ("multiclass",)
    ignore_index = None
    splits = ("kfold",)
    submission = None

    def __init__(self, task):
        self.classes = list(task.classes)
        self.cache_id = "mine-1"

    def ensure(self, data, progress):
        pass

    def fold(self, data, seed):
        pics = sorted(Path(data.root, "pics").glob("*.png"))
        samples = [Sample(p.stem, p, Path(data.root, "labels", p.name), p.stem) for p in pics]
        idx = np.arange(len(samples))
        return samples, idx[idx % data.n_splits != data.fold], idx[idx % data.n_splits == data.fold], []

    def read_image(self, path):
        return read_gray(path)

    def process(self, sample, size):
        image = self.read_image(sample.image)
        labels = np.asarray(Image.open(sample.annotation))
        small = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST) if size else labels
        return resize_image(image, size), small, image.shape[:2], []

    def meta(self, root):
        return {}
'''


def test_plugin_layout_from_a_file_trains_one_step(tmp_path):
    root = tmp_path / "data"
    (root / "pics").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        plane = blobs(32, 32, rng, 1)[0]
        cv2.imwrite(str(root / "pics" / f"p{i}.png"), plane.astype(np.uint8) * 200)
        Image.fromarray(plane.astype(np.uint8), "L").save(root / "labels" / f"p{i}.png")
    plugin = tmp_path / "my_layout.py"
    plugin.write_text(PLUGIN)
    cfg = load_config(ROOT / "configs" / "trash_demo.yaml",
                      [f"task.format={plugin}:MyLayout", "task.submission=null", "task.classes=[bg, object]", f"data.root={root}",
                       f"data.cache_dir={tmp_path / 'cache'}", "data.synthetic=null", "data.split=kfold",
                       "model.in_channels=1", "transforms.copy_paste=null", "data.oversample=null", *SMALL])
    result = fit(cfg, tmp_path / "run")
    assert result["epochs"] == 1 and 0 <= result["best_miou"] <= 1
