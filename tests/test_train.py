"""A tiny end-to-end run: train a few steps, checkpoint, resume exactly, stop early, fail clearly."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from trainer.kfold import parse_folds
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.errors import ConfigError, UserError


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


MISFITS = [(["model.arch=HRNetOCR", "model.encoder=resnet34"],
            r"^model\.encoder: HRNetOCR needs a timm HRNet .* not 'resnet34'$"),
           (["model.arch=SwinUNETR", "model.params={feature_size: 10}"],
            r"^model: cannot build SwinUNETR .*feature_size should be divisible by 12"),
           (["model.encoder=resnet_x"], r"^model: cannot build Unet with encoder 'resnet_x'"),
           (["model.arch=Unetto"], r"^model\.arch: unknown architecture 'Unetto' \(did you mean 'Unet'\?\)")]


@pytest.mark.parametrize("sets,message", MISFITS, ids=["hrnet-on-resnet", "swin-size", "encoder", "arch"])
def test_model_misfit_fails_before_the_data_work(tiny_config, tmp_path, sets, message):
    """The synthetic dataset is not generated, nor the cache built, nor the run folder made."""
    cfg = tiny_config(f"data.root={tmp_path / 'hands'}", *sets)
    with pytest.raises(ConfigError, match=message):
        fit(cfg, tmp_path / "run")
    assert not any(tmp_path.iterdir())


def test_cli_model_misfit_leaves_the_previous_run(tmp_path):
    """train.py refuses before --overwrite deletes anything: the old checkpoint is kept, no data made."""
    from train import main

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.pt").write_bytes(b"previous run")
    sets = ["model.arch=HRNetOCR", "model.encoder=resnet34", f"data.root={tmp_path / 'hands'}",
            f"data.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(ConfigError, match=MISFITS[0][1]):
        main(["--config", str(ROOT / "configs" / "demo.yaml"), "--out", str(tmp_path / "run"), "--overwrite",
              *[arg for item in sets for arg in ("--set", item)]])
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["best.pt", "run"]


def test_folds_need_a_kfold_split():
    assert parse_folds("all", 3) == [0, 1, 2]
    with pytest.raises(UserError, match=r"^--folds: data\.split is 'files' .*there are no folds"):
        parse_folds("all", 3, "files")
