"""A tiny end-to-end run: train a few steps, checkpoint, resume exactly, stop early, fail clearly."""
import json
import subprocess
import sys

import torch

from tests.conftest import ROOT
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer


def fit(cfg, run_dir, resume=None):
    return Trainer(cfg, run_dir, setup_runtime(cfg.trainer), resume=resume, progress=False).fit()


def test_train_checkpoint_and_exact_resume(tiny_config, tmp_path):
    cfg = tiny_config("transforms.gpu=[{name: HorizontalFlip, p: 0.5}]", "scheduler.name=cosine",
                      "scheduler.warmup_epochs=0.5")
    result = fit(cfg, tmp_path / "full")
    assert 0.0 <= result["best_dice"] <= 1.0 and result["epochs"] == 2
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "full" / name).is_file()
    last = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    assert last["classes"] == cfg.task.classes and last["epoch"] == 1 and last["metrics"]["val_dice"] is not None
    records = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and len(records[0]["val_dice_per_class"]) == 29

    # stop after one epoch, resume to two: same weights as the uninterrupted run
    fit(tiny_config("transforms.gpu=[{name: HorizontalFlip, p: 0.5}]", "scheduler.name=cosine",
                    "scheduler.warmup_epochs=0.5", "trainer.epochs=1"), tmp_path / "part")
    first = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    first["config"]["trainer"]["epochs"] = 2  # the same run, asked for one more epoch
    torch.save(first, tmp_path / "part" / "last.pt")
    fit(cfg, tmp_path / "part", resume=str(tmp_path / "part" / "last.pt"))
    resumed = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    for key, value in last["model"].items():
        assert torch.allclose(value.float(), resumed["model"][key].float(), atol=1e-6), key
    assert resumed["best_score"] == last["best_score"]


def test_early_stopping(tiny_config, tmp_path):
    cfg = tiny_config("trainer.epochs=6", "trainer.early_stop_patience=1", "optimizer.lr=1e-12")
    result = fit(cfg, tmp_path / "run")
    assert result["stopped_early"] and result["epochs"] == 2


def test_cli_errors_are_one_line(tmp_path):
    run = subprocess.run([sys.executable, "train.py", "--config", "configs/demo.yaml", "--set", "optimizer.lrr=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: configs/demo.yaml: unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"


def test_training_on_crops_validates_by_sliding_window(tiny_config, tmp_path):
    """The full-resolution recipe in small: random crops of the cached images, whole-image sliding-window scoring."""
    cfg = tiny_config("data.crop_size=32", "predict.mode=sliding", "predict.overlap=0.5", "trainer.epochs=1")
    trainer = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False)
    x, y = trainer._to_device(next(iter(trainer.train_loader)))
    assert x.shape[-2:] == (32, 32) and y.shape[-2:] == (32, 32)
    assert trainer.predictor.window == 32
    result = trainer.fit()
    assert 0.0 <= result["best_dice"] <= 1.0
