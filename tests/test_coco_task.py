"""The trash task through the one task interface: config checks, a tiny multiclass run (train, checkpoint, resume,
infer, CSV, --check, --save-masks), k-fold splits, ensembles and pseudo-labels."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from tasks.coco.submission import SUBMISSION_SIZE, validate_trash_submission
from tasks.coco.synthetic import generate
from tasks.registry import build_task
from tests.conftest import ROOT
from tracking.build import build_tracking
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import load_config
from utils.errors import ConfigError

DEMO = ROOT / "configs" / "trash_demo.yaml"


@pytest.fixture(scope="module")
def trash_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("trash") / "ds", train=16, test=3, size=64, seed=2, progress=False)


def trash_overrides(root, cache) -> list[str]:
    return [f"data.root={root}", f"data.cache_dir={cache}", "data.synthetic=null", "data.image_size=32",
            "data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", "data.cache_workers=1",
            "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}", "trainer.epochs=2",
            "trainer.val_every=1", "transforms.gpu=[{name: HorizontalFlip, p: 0.5}]"]


def fit(cfg, run_dir, resume=None):
    """As train.py runs it: the config's tracking built by the caller and handed to the Trainer."""
    return Trainer(cfg, run_dir, setup_runtime(cfg.trainer), resume=resume, progress=False,
                   callbacks=build_tracking(cfg, run_dir)).fit()


def run(script, *args):
    return subprocess.run([sys.executable, script, *map(str, args), "--no-progress"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_config_rejects_mismatched_task(tmp_path):
    """What needs the layout and mode is checked by tasks.build_task, which every consumer calls first."""
    with pytest.raises(ConfigError, match=r"task\.mode: 'multilabel' does not fit task\.format 'coco'"):
        build_task(load_config(DEMO, ["task.mode=multilabel"]))
    with pytest.raises(ConfigError, match=r"model\.in_channels: task\.format 'coco' gives 3-channel images"):
        build_task(load_config(DEMO, ["model.in_channels=1"]))
    with pytest.raises(ConfigError, match=r"transforms\.copy_paste\.classes: 'Batery'"):
        load_config(DEMO, ["transforms.copy_paste.classes=[Batery]"])
    with pytest.raises(ConfigError, match=r"data\.split: task\.format 'handbone' splits by kfold, not 'files'"):
        build_task(load_config(ROOT / "configs" / "demo.yaml", ["data.split=files"]))
    with pytest.raises(ConfigError, match=r"predict\.crf"):
        build_task(load_config(ROOT / "configs" / "demo.yaml", ["predict.crf={}"]))
    with pytest.raises(ConfigError, match="bce scores independent sigmoid classes"):
        from losses.factory import build_loss
        build_loss(load_config(DEMO, ["loss.terms=[{name: bce}]"]).loss, "multiclass")


def test_multiclass_train_resume_infer_and_check(trash_root, tmp_path, capsys):
    cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache"))
    result = fit(cfg, tmp_path / "full")
    log = capsys.readouterr().out
    assert "(data.split=files), " in log and "fold" not in log  # train.json / val.json: no folds
    assert result["metric"] == "miou" and 0.0 <= result["best_miou"] <= 1.0 and result["epochs"] == 2
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert len(records[0]["val_miou_per_class"]) == 11 and 0 <= records[0]["val_pixel_accuracy"] <= 1
    last = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert last["metrics"]["val_miou"] is not None

    # one epoch, then resumed to two: the same weights as the uninterrupted run
    fit(load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + ["trainer.epochs=1"]), tmp_path / "part")
    first = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    first["config"]["trainer"]["epochs"] = 2
    torch.save(first, tmp_path / "part" / "last.pt")
    fit(cfg, tmp_path / "part", resume=str(tmp_path / "part" / "last.pt"))
    resumed = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    for key, value in last["model"].items():
        assert torch.allclose(value.float(), resumed["model"][key].float(), atol=1e-6), key

    out, masks = tmp_path / "sub.csv", tmp_path / "masks"
    done = run("inference.py", "--checkpoint", tmp_path / "full" / "best.pt", "--out", out, "--save-masks", masks,
               "--workers", "0")
    assert done.returncode == 0, done.stderr
    test = json.loads((trash_root / "test.json").read_text())
    names = [im["file_name"] for im in test["images"]]
    lines = out.read_text().splitlines()
    assert lines[0] == "image_id,PredictionString" and [ln.split(",")[0] for ln in lines[1:]] == names
    assert validate_trash_submission(out, trash_root / "test.json", 11) == []
    for name, line in zip(names, lines[1:]):
        png = cv2.imread(str(masks / name.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
        assert png.shape == (64, 64) and png.dtype == np.uint8
        small = cv2.resize(png, (SUBMISSION_SIZE, SUBMISSION_SIZE), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(np.array(line.split(",")[1].split(), dtype=np.uint8).reshape(small.shape), small)
    check = run("inference.py", "--check", out, "--data", trash_root, "--config", DEMO)
    assert check.returncode == 0 and "OK" in check.stdout, check.stdout + check.stderr
    (tmp_path / "bad.csv").write_text("\n".join(lines[:-1]) + "\n")
    check = run("inference.py", "--check", tmp_path / "bad.csv", "--data", trash_root, "--config", DEMO)
    assert check.returncode == 1 and "have no row" in check.stdout

    # DenseCRF before the argmax: still a valid submission, close to the plain one
    crf = tmp_path / "crf.csv"
    done = run("inference.py", "--checkpoint", tmp_path / "full" / "best.pt", "--out", crf, "--workers", "0",
               "--set", "predict.crf={iterations: 3}")
    assert done.returncode == 0, done.stderr
    assert validate_trash_submission(crf, trash_root / "test.json", 11) == []

    # ensembles: a soft vote of the model with itself is the model; a hard vote of one CSV with itself too
    soft = tmp_path / "soft.csv"
    done = run("ensemble.py", "--checkpoints", tmp_path / "full" / "best.pt", tmp_path / "full" / "best.pt",
               "--out", soft, "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert soft.read_text() == out.read_text()
    hard = tmp_path / "hard.csv"
    done = run("ensemble.py", "--csvs", out, out, soft, "--config", DEMO, "--out", hard)
    assert done.returncode == 0, done.stderr
    assert hard.read_text() == out.read_text()


def test_kfold_split_and_oversampling(trash_root, tmp_path):
    from data.pipeline import prepare_fold

    runtime = setup_runtime(load_config(DEMO).trainer)
    folds = []
    for k in range(3):
        cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + [
            "data.split=kfold", "data.n_splits=3", f"data.fold={k}", "data.oversample=null"])
        folds.append(prepare_fold(cfg, build_task(cfg).layout, runtime, progress=False))
    vals = np.concatenate([f.val_indices for f in folds])
    assert sorted(vals.tolist()) == list(range(16))
    cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + [
        "data.oversample={factors: {Paper: 3}}"])
    data = prepare_fold(cfg, build_task(cfg).layout, runtime, progress=False)
    presence = data.cache.class_presence()
    counts = np.bincount(data.train_indices, minlength=len(data.cache))
    paper = presence[:, 2] > 0
    train = np.zeros(len(data.cache), bool)
    train[np.unique(data.train_indices)] = True
    assert (counts[train & paper] == 3).all() and (counts[train & ~paper] == 1).all()


def test_copy_paste_in_the_dataset_keeps_labels_and_pixels(trash_root, tmp_path):
    from data.dataset import TrainDataset
    from data.pipeline import prepare_fold
    from transforms.copy_paste import build_copy_paste

    cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + [
        "transforms.copy_paste={classes: [Paper, Plastic bag], p: 1.0, max_objects: 2}", "data.oversample=null"])
    data = prepare_fold(cfg, build_task(cfg).layout, setup_runtime(cfg.trainer), progress=False)
    paste = build_copy_paste(cfg.transforms.copy_paste, cfg.task.classes, data.cache, data.train_indices)
    dataset = TrainDataset(data.cache, data.train_indices, copy_paste=paste)
    torch.manual_seed(0)
    changed = 0
    for n in range(len(dataset)):
        item = dataset[n]
        i = dataset.indices[n]
        image, labels = item["image"].numpy().transpose(1, 2, 0), item["labels"].numpy()
        assert image.shape[:2] == labels.shape and set(np.unique(labels)) <= set(range(11))
        new = labels != data.cache.labels(i)
        assert set(np.unique(labels[new])) <= {2, 8}  # only pasted classes appear where the labels changed
        same = (image == data.cache.image(i)).all(2)
        assert same[~new & (labels == data.cache.labels(i))].mean() > 0.5  # the rest is mostly untouched
        changed += int(new.any())
    assert changed > 0


def test_coco_pseudo_labels_roundtrip(trash_root, tmp_path):
    from tasks.coco.pseudo import write_pseudo_coco
    from tasks.coco.reader import label_map, read_coco
    from tasks.coco.synthetic import TRASH_CLASSES

    classes = list(TRASH_CLASSES)
    test = read_coco(trash_root / "test.json", trash_root, classes, labelled=False).samples
    truth = read_coco(trash_root / "train_all.json", trash_root, classes).samples
    predictions = [(s, label_map(t), c) for s, t, c in zip(test, truth, (0.95, 0.5, 0.99))]
    report = write_pseudo_coco(predictions, tmp_path / "pseudo.json", classes, 0.9, {"source": "test"})
    assert report.written and report.kept == [test[0].key, test[2].key] and report.skipped == [test[1].key]
    back = read_coco(tmp_path / "pseudo.json", trash_root, classes).samples
    assert [s.key for s in back] == report.kept
    for sample, original in zip(back, (truth[0], truth[2])):
        got, want = label_map(sample), label_map(original)
        assert (got == want).mean() > 0.995  # polygons of the components give back the label map (holes aside)


def test_pseudo_label_cli_writes_a_trainable_coco_json(trash_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + [
        "trainer.epochs=1", "logging.backends=[tensorboard]", "logging.image_every=1"])
    fit(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    events = EventAccumulator(str(tmp_path / "run")).Reload()  # tracking logs the multiclass numbers too
    assert events.Scalars("val_miou")[0].value == pytest.approx(record["val_miou"])
    assert events.Scalars("val_pixel_accuracy")[0].value == pytest.approx(record["val_pixel_accuracy"])
    out = tmp_path / "pseudo.json"
    done = run("pseudo_label.py", "--checkpoints", tmp_path / "run" / "best.pt", "--out", out, "--min-confidence",
               "0", "--workers", "0")
    assert done.returncode == 0, done.stderr
    assert "kept 3 of 3 test images" in done.stdout and f"data.pseudo_roots: [{out}]" in done.stdout
    data = json.loads(out.read_text())
    test = json.loads((trash_root / "test.json").read_text())
    assert [im["file_name"] for im in data["images"]] == [im["file_name"] for im in test["images"]]
    assert [c["id"] for c in data["categories"]] == list(range(1, 11))
    # the pseudo-labelled test images join the training set (never validation)
    from data.pipeline import prepare_fold

    cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + [
        f"data.pseudo_roots=[{out}]", "data.oversample=null"])
    fold = prepare_fold(cfg, build_task(cfg).layout, setup_runtime(cfg.trainer), progress=False)
    assert len(fold.train_indices) == 13 + 3 and len(fold.val_indices) == 3
    assert fold.cache.keys[-3:] == [im["file_name"] for im in test["images"]]


def test_gpu_intensity_augmentations_on_rgb_batches(trash_root, tmp_path):
    """The configured GPU intensity augmentations on the trainer's own path for a multiclass batch: (B, 3, H, W)
    photographs change (each channel), stay finite; the (B, H, W) label maps come back unchanged."""
    from trainer.predictor import model_input

    cfg = load_config(DEMO, trash_overrides(trash_root, tmp_path / "cache") + [
        "transforms.gpu=[{name: RandomBrightnessContrast, p: 1.0}, {name: RandomGamma, gamma_limit: [60, 140], "
        "p: 1.0}, {name: CLAHE, clip_limit: 4.0, tile_grid_size: [4, 4], p: 1.0}]", "trainer.channels_last=false"])
    trainer = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False)
    batch = next(iter(trainer.train_loader))
    assert batch["image"].shape[1] == 3 and batch["labels"].ndim == 3
    torch.manual_seed(0)
    x, labels = trainer._to_device(batch)
    plain, _ = model_input(batch["image"], cfg.data.mean, cfg.data.std)
    assert x.shape == plain.shape and torch.isfinite(x).all()
    assert labels.dtype == torch.long and torch.equal(labels, batch["labels"].long())
    changed = (x - plain).abs().amax(dim=(2, 3)) > 1e-3  # (B, 3): every image, every channel
    assert changed.all(), changed


def test_gpu_clahe_on_rgb_equalizes_lightness_only():
    """As albumentations does for RGB: CLAHE on the L of LAB, the colour (a, b) kept; p=0 is the identity."""
    from kornia.color import rgb_to_lab

    from transforms.gpu import build_gpu_transforms

    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    base = 0.3 + 0.2 * torch.stack([xx, yy, (xx + yy) / 2])  # a dim, smooth colour image: CLAHE brightens it
    image = (base + 0.03 * torch.rand(2, 3, 64, 64)).clamp(0, 1)
    mask = torch.zeros(2, 1, 64, 64)
    spec = {"name": "CLAHE", "clip_limit": [4.0, 4.0], "tile_grid_size": [4, 4], "p": 1.0}
    out, out_mask = build_gpu_transforms([spec], "k")(image, mask)
    before, after = rgb_to_lab(image), rgb_to_lab(out)
    assert torch.equal(out_mask, mask) and torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert (after[:, 0] - before[:, 0]).abs().mean() > 5  # lightness equalized
    assert (after[:, 1:] - before[:, 1:]).abs().mean() < 0.5  # colour kept (per-channel CLAHE moves it by ~5)
    same, _ = build_gpu_transforms([{**spec, "p": 0.0}], "k")(image, mask)
    assert torch.equal(same, image)
