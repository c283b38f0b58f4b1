"""inference.py / ensemble.py: the exact CSV, TTA and sliding-window correctness, voting, bad inputs."""
import csv
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.handbone.reader import scan_split
from tasks.handbone.submission import validate_submission
from tests.conftest import ROOT
from trainer.inference import PROBS_SCALE, load_member, load_probs_member, member_config
from trainer.predictor import Predictor, to_full_size
from trainer.runtime import setup_runtime
from trainer.thresholds import BINS, per_threshold_dice
from utils.cli import run_main
from utils.config import PredictConfig, TrainerConfig
from utils.images import read_gray, resize_image
from utils.rle import decode_rle


def run(script, *args):
    return subprocess.run([sys.executable, script, *map(str, args), "--no-progress"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_inference_csv_reproduces_the_model(tiny_checkpoint, dataset_root, tmp_path, classes):
    out = tmp_path / "sub.csv"
    result = run("inference.py", "--checkpoint", tiny_checkpoint, "--data", dataset_root, "--out", out,
                 "--threshold", "0.3", "--workers", "0")
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    samples = scan_split(dataset_root, "test")
    assert rows[0] == ["image_name", "class", "rle"] and len(rows) == 1 + 29 * len(samples)
    assert [r[0] for r in rows[1::29]] == [Path(s.key).name for s in samples]  # sorted by IDxxx/name.png
    assert [r[1] for r in rows[1:30]] == classes
    assert validate_submission(out, dataset_root, classes) == []
    check = run("inference.py", "--check", out, "--data", dataset_root)
    assert check.returncode == 0 and "OK" in check.stdout

    # decoded masks are exactly the model's thresholded full-size predictions
    cfg = member_config(tiny_checkpoint)
    member = load_member(tiny_checkpoint, cfg, setup_runtime(cfg.trainer))
    for n, sample in enumerate(samples):
        image = read_gray(sample.image)
        x = torch.from_numpy(resize_image(image, cfg.data.image_size))[None, None]
        expected = (to_full_size(member.predictor(x)[0], image.shape) > 0.3).numpy()
        got = np.stack([decode_rle(r[2], *image.shape) for r in rows[1 + 29 * n:1 + 29 * (n + 1)]])
        assert np.array_equal(got, expected)


class Identity(torch.nn.Module):
    """Logits equal to the input: predictions can be compared with the input pixel for pixel."""

    def forward(self, x):
        return x.repeat(1, 2, 1, 1)


def predictor(**kwargs):
    cfg = PredictConfig(**kwargs)
    return Predictor(Identity(), cfg, setup_runtime(TrainerConfig(device="cpu")), mean=0.0, std=1.0 / 255)


def test_hflip_tta_flips_back():
    x = torch.randint(0, 255, (2, 1, 16, 24), dtype=torch.uint8)  # asymmetric content
    plain, tta = predictor()(x), predictor(tta="hflip")(x)
    assert torch.allclose(plain, tta, atol=1e-6)


def test_sliding_window_stitches_back_the_input():
    x = torch.randint(0, 255, (1, 1, 100, 72), dtype=torch.uint8)
    full = predictor()(x)
    for overlap in (0.0, 0.25, 0.5):
        tiled = predictor(mode="sliding", window=32, overlap=overlap, batch_size=3)(x)
        assert torch.allclose(tiled, full, atol=1e-5)


def _save_probs(folder, samples, maps, classes):
    for sample, m in zip(samples, maps):
        path = folder / Path(sample.key).with_suffix(".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, probs=m)
    (folder / "probs.json").write_text(json.dumps({"classes": classes}))


def test_soft_voting_of_probability_folders(dataset_root, tmp_path, classes):
    samples = scan_split(dataset_root, "test")
    rng = np.random.default_rng(0)
    a = [rng.integers(0, 256, (29, 128, 128), dtype=np.uint8) for _ in samples]
    b = [rng.integers(0, 256, (29, 128, 128), dtype=np.uint8) for _ in samples]
    _save_probs(tmp_path / "a", samples, a, classes)
    _save_probs(tmp_path / "b", samples, b, classes)
    out = tmp_path / "vote.csv"
    result = run("ensemble.py", "--probs", tmp_path / "a", tmp_path / "b", "--weights", 1, 3, "--data", dataset_root,
                 "--out", out, "--threshold", 0.501, "--workers", 0)  # no exact ties
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)[1:]
    for n in range(len(samples)):
        expected = (a[n] / PROBS_SCALE * 1 + b[n] / PROBS_SCALE * 3) / 4 > 0.501
        got = np.stack([decode_rle(r[2], 128, 128) for r in rows[29 * n:29 * (n + 1)]])
        assert np.array_equal(got, expected)


def test_save_probs_then_ensemble_equals_inference(tiny_checkpoint, dataset_root, tmp_path):
    direct, probs = tmp_path / "direct.csv", tmp_path / "probs"
    assert run("inference.py", "--checkpoint", tiny_checkpoint, "--data", dataset_root, "--out", direct,
               "--save-probs", probs, "--workers", 0).returncode == 0
    assert load_probs_member(probs).classes
    soft = tmp_path / "soft.csv"
    result = run("ensemble.py", "--checkpoints", tiny_checkpoint, tiny_checkpoint, "--data", dataset_root,
                 "--out", soft, "--workers", 0)
    assert result.returncode == 0, result.stderr
    assert soft.read_text() == direct.read_text()  # two copies of one model vote like the model alone


def test_hard_voting_cli(tiny_checkpoint, dataset_root, tmp_path):
    sub = tmp_path / "a.csv"
    assert run("inference.py", "--checkpoint", tiny_checkpoint, "--data", dataset_root, "--out", sub,
               "--workers", 0).returncode == 0
    out = tmp_path / "hard.csv"
    result = run("ensemble.py", "--csvs", sub, sub, sub, "--min-votes", 2, "--data", dataset_root, "--out", out)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == sub.read_text()


def test_per_threshold_dice_matches_direct_computation():
    probs = torch.rand(3, 20, 20)
    truth = torch.rand(3, 20, 20) > 0.6
    table = per_threshold_dice(probs, truth)
    for b in (1, 37, 50, 99):
        pred = probs > b / BINS
        inter = (pred & truth).flatten(1).sum(1).double()
        direct = (2 * inter + 1e-4) / (pred.flatten(1).sum(1) + truth.flatten(1).sum(1) + 1e-4)
        assert torch.allclose(table[:, b], direct)


def test_tune_thresholds_cli(tiny_checkpoint, tmp_path):
    out = tmp_path / "thresholds.json"
    result = run("inference.py", "--checkpoint", tiny_checkpoint, "--tune-thresholds", out)
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert len(data["thresholds"]) == 29 and data["val_dice"] >= data["val_dice_at_default"] - 1e-9
    assert all(0 < t < 1 for t in data["thresholds"].values())


# ------------------------------------------------------------------------------------------- bad input


def run_here(capsys, script, *args):
    """An entry script's main in this process (no interpreter start per case): its exit status and stderr."""
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as done:
        run_main(lambda: module.main([*map(str, args), "--no-progress"]))
    return subprocess.CompletedProcess(script, done.value.code, "", capsys.readouterr().err)


def test_bad_inputs_are_one_line_errors(tiny_checkpoint, dataset_copy, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "test" / "DCM").mkdir(parents=True)
    r = run_here(capsys, "inference", "--checkpoint", tiny_checkpoint, "--data", empty, "--out", tmp_path / "x.csv")
    assert r.returncode == 2 and "no PNG images" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    broken = scan_split(dataset_copy, "test")[1].image
    broken.write_bytes(b"garbage")
    out = tmp_path / "y.csv"
    r = run_here(capsys, "inference", "--checkpoint", tiny_checkpoint, "--data", dataset_copy, "--out", out, "--workers", 0)
    assert r.returncode == 2 and str(broken) in r.stderr and "unreadable image" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("y.csv*")), "no partial CSV is left behind"

    other = tmp_path / "other.pt"
    state = torch.load(tiny_checkpoint, weights_only=True)
    state["classes"] = state["classes"][:-1]
    torch.save(state, other)
    r = run_here(capsys, "inference", "--checkpoint", other, "--out", tmp_path / "z.csv")
    assert r.returncode == 2 and "classes differ" in r.stderr and str(other) in r.stderr

    r = run_here(capsys, "ensemble", "--checkpoints", tiny_checkpoint, other, "--out", tmp_path / "w.csv")
    assert r.returncode == 2 and str(other) in r.stderr

    r = run_here(capsys, "inference", "--checkpoint", tiny_checkpoint, "--set", "model.encoder=resnet34", "--out", tmp_path / "v.csv")
    assert r.returncode == 2 and "weights do not fit model Unet/resnet34" in r.stderr and len(r.stderr.splitlines()) == 1


def test_check_reports_missing_rows(tiny_checkpoint, dataset_root, tmp_path):
    sub = tmp_path / "sub.csv"
    assert run("inference.py", "--checkpoint", tiny_checkpoint, "--data", dataset_root, "--out", sub,
               "--workers", 0).returncode == 0
    lines = sub.read_text().splitlines()
    sub.write_text("\n".join(lines[:-3]) + "\n")
    r = run("inference.py", "--check", sub, "--data", dataset_root)
    assert r.returncode == 1 and r.stdout.strip()
