"""Several processes with torchrun (gloo on the CPU) and k-fold training."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, tiny_overrides
from trainer.kfold import parse_folds
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import load_config
from utils.errors import UserError


def test_two_process_training_scores_like_one_process(dataset_root, tmp_path):
    overrides = tiny_overrides(dataset_root, tmp_path / "cache") + ["trainer.epochs=1", "data.batch_size=2",
                                                                     "trainer.ddp_find_unused_parameters=true"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               "--config", "configs/demo.yaml", "--out", str(tmp_path / "ddp"), "--no-progress"]
    for item in overrides:
        command += ["--set", item]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("best validation Dice") == 1  # printed by rank 0 only
    ddp_score = json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])["val_dice"]

    cfg = load_config(ROOT / "configs" / "demo.yaml", overrides)
    single = Trainer(cfg, tmp_path / "single", setup_runtime(cfg.trainer), progress=False)
    single.model.load_state_dict(torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"])
    score, _ = single.validate()
    assert score == pytest.approx(ddp_score, abs=1e-9)


def test_two_process_multiclass_rgb_training(tmp_path):
    """The trash task (RGB photographs, label maps, mIoU) under torchrun: GPU augmentations with 3 channels, the
    confusion matrix reduced over both ranks, one best.pt."""
    from tasks.coco.synthetic import generate
    from tests.test_coco_task import DEMO, trash_overrides

    root = generate(tmp_path / "ds", train=10, test=1, size=64, seed=4, progress=False)
    overrides = trash_overrides(root, tmp_path / "cache") + [
        "trainer.epochs=1", "data.batch_size=2", "trainer.ddp_find_unused_parameters=true",
        "transforms.gpu=[{name: HorizontalFlip, p: 0.5}, {name: RandomBrightnessContrast, p: 0.5}, "
        "{name: RandomGamma, gamma_limit: [80, 120], p: 0.5}]"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
               "--config", str(DEMO), "--out", str(tmp_path / "ddp"), "--no-progress"]
    for item in overrides:
        command += ["--set", item]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and 0.0 <= records[0]["val_miou"] <= 1.0
    assert len(records[0]["val_miou_per_class"]) == 11
    assert (tmp_path / "ddp" / "best.pt").is_file()

    cfg = load_config(DEMO, overrides)  # the reduced confusion matrix scores like one process over the whole fold
    single = Trainer(cfg, tmp_path / "single", setup_runtime(cfg.trainer), progress=False)
    single.model.load_state_dict(torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"])
    score, _ = single.validate()
    assert score == pytest.approx(records[0]["val_miou"], abs=1e-9)


def test_kfold_trains_every_fold_and_summarizes(dataset_root, tmp_path):
    command = [sys.executable, "train.py", "--config", "configs/demo.yaml", "--folds", "all", "--out",
               str(tmp_path / "kf"), "--no-progress"]
    for item in tiny_overrides(dataset_root, tmp_path / "cache") + ["trainer.epochs=1"]:
        command += ["--set", item]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "kf" / "folds.json").read_text())
    assert sorted(summary["folds"]) == ["0", "1", "2"]
    for k in range(3):
        assert (tmp_path / "kf" / f"fold{k}" / "best.pt").is_file()
    scores = [f["val_dice"] for f in summary["folds"].values()]
    assert summary["val_dice"]["mean"] == pytest.approx(sum(scores) / 3)
    assert len(summary["per_class"]) == 29 and "±" in run.stdout


def test_parse_folds():
    assert parse_folds("all", 5) == [0, 1, 2, 3, 4] and parse_folds("3,1", 5) == [1, 3]
    with pytest.raises(UserError, match="out of range"):
        parse_folds("5", 5)
    with pytest.raises(UserError, match="expected 'all'"):
        parse_folds("first", 5)
