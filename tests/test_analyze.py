"""analyze.py: the report opened in headless Chromium, its measures against hand-made masks, run comparison,
bad input."""
import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from analysis.analyze_run import analyze_run
from analysis.compare import write_comparison
from analysis.evaluate import display_masks, image_dice, predicted_masks
from analysis.measures import BoundaryStats, boundary, confusion_counts, confusion_counts_boxes, truth_boxes
from analysis.overlay import shrink
from modes.dice import dice_per_class
from modes.fullsize import FullSizeProbs
from tests.browser import open_page
from tests.conftest import ROOT
from trainer.predictor import to_full_size
from trainer.thresholds import per_threshold_dice, per_threshold_dice_boxes
from utils.errors import UserError

PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth, done: i.complete})),
  cells: [...document.querySelectorAll('td[data-metric]')].map(td => [td.dataset.epoch, td.dataset.metric,
                                                                      td.textContent]),
  best: document.getElementById('best-dice').textContent,
  recomputed: document.getElementById('recomputed-dice').textContent,
  classes: [...document.querySelectorAll('tr[data-class]')].map(tr => tr.dataset.class)})"""


@pytest.fixture
def run_dir(tiny_checkpoint, tmp_path):
    """A private copy of the session's one-epoch run (config.yaml, metrics.jsonl, best.pt)."""
    return shutil.copytree(tiny_checkpoint.parent, tmp_path / "run",
                           ignore=shutil.ignore_patterns("last.pt", "report"))


def test_report_in_a_real_browser(chromium, run_dir, classes):
    index = analyze_run(str(run_dir), k_worst=2, cleansing=2, progress=False)
    assert index == run_dir / "report" / "index.html"
    state, errors = open_page(chromium, index, PAGE_STATE)
    state = json.loads(state)
    assert errors == []
    names = {i["src"] for i in state["images"]}
    assert {"curves.png", "per_class_curves.png", "dice_per_class.png", "confusion.png", "boundary.png",
            "thresholds.png", "worst_00.png", "worst_01.png", "cleansing_00.png", "cleansing_01.png"} == names
    assert all(i["done"] and i["width"] > 0 for i in state["images"])

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = []
    for r in records:
        shown = {"epoch": str(r["epoch"]), "train_loss": f"{r['train_loss']:.4f}", "lr": f"{r['lr']:.3e}",
                 "val_dice": f"{r['val_dice']:.4f}", "best_dice": f"{r['best_dice']:.4f}",
                 "seconds": f"{r['seconds']:.1f}"}
        expected += [[str(r["epoch"]), key, text] for key, text in shown.items()]
    assert state["cells"] == expected
    best = max(records, key=lambda r: r["val_dice"])["val_dice"]
    # the checkpoint re-scored by the report equals what training logged: same predictor, same fold
    assert state["best"] == f"{best:.4f}" == state["recomputed"]
    assert sorted(state["classes"]) == sorted(classes)


def test_confusion_on_hand_made_masks():
    truth = torch.zeros(3, 20, 20, dtype=torch.bool)
    pred = torch.zeros_like(truth)
    truth[0, 2:10, 2:10] = True  # 64 pixels of bone 0
    pred[0, 2:10, 2:9] = True  # its right column (8 px) is missed ...
    pred[1, 2:10, 9] = True  # ... and given to bone 1
    pred[2, 2:10, 8:10] = True  # bone 2 also claims 16 px, 8 of which bone 0 keeps
    truth[1, 15:18, 15:18] = True  # bone 1: 9 px, entirely missed, given to nobody
    counts = confusion_counts(truth, pred).numpy()
    assert counts.tolist() == [[0, 8, 8], [0, 0, 0], [0, 0, 0]]


def _brute_surface(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Every boundary pixel of one mask to the nearest of the other, both ways, by pairwise distances."""
    def edge(m):
        padded = np.pad(m, 1)
        inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        return np.argwhere(m & ~inner)

    a, b = edge(t), edge(p)
    d = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    return np.concatenate([d.min(0), d.min(1)])


def test_boundary_error_on_hand_made_masks():
    truth = torch.zeros(2, 30, 30, dtype=torch.bool)
    pred = torch.zeros_like(truth)
    truth[0, 2:10, 2:10] = True
    pred[0, 2:10, 3:11] = True  # shifted one pixel: every wrong pixel lies on or next to the true boundary
    truth[1, 2:6, 2:6] = True
    pred[1, 2:6, 2:6] = True
    pred[1, 20:24, 20:24] = True  # a false positive far from the bone
    stats = BoundaryStats(2)
    stats.update(truth, pred)
    assert stats.wrong.tolist() == [16, 16] and stats.near.tolist() == [16, 0]
    assert stats.near_share().tolist() == [1.0, 0.0]
    for c in range(2):
        expected = _brute_surface(truth[c].numpy(), pred[c].numpy())
        assert stats.mean_distance()[c] == pytest.approx(expected.mean())
        assert abs(stats.percentile_distance(95)[c] - np.percentile(expected, 95, method="inverted_cdf")) <= 0.25
    assert boundary(np.ones((3, 3), bool)).sum() == 8  # the image border counts as background


def _neighbouring_bones(c: int, low: tuple[int, int], size: tuple[int, int], seed: int):
    """Model-like maps (confident background, overlapping blobs, one class everywhere, one nowhere) and a truth of
    shifted blobs, packed as the cache packs it."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.full((c, *low), -8.0) + torch.randn(c, *low, generator=g)
    truth = np.zeros((c, *size), dtype=bool)
    for k in range(2, c):
        y, x = int(torch.randint(0, low[0] - 4, (1,), generator=g)), int(torch.randint(0, low[1] - 4, (1,), generator=g))
        logits[k, y:y + 5, x:x + 4] += 10 + 2 * torch.randn(5, 4, generator=g)
        fy, fx = size[0] / low[0], size[1] / low[1]
        truth[k, int((y + 1) * fy):int((y + 5) * fy), int(x * fx):int((x + 5) * fx)] = True
    logits[0] = 8.0
    logits[1] = -30.0
    truth[1, 3:9, 2:7] = True  # a bone the model misses entirely
    return logits.sigmoid(), torch.from_numpy(truth), np.packbits(truth, axis=2)


@pytest.mark.parametrize("low,size", [((12, 10), (70, 53)), ((20, 16), (700, 579))])
def test_box_measures_equal_the_full_size_reference(low, size):
    """The report's per-image Dice, Dice per threshold, confusion, boundary statistics and overlay masks from boxes
    equal those of the full-size maps (trainer.predictor.to_full_size), on random maps of neighbouring bones."""
    probs, truth, bits = _neighbouring_bones(6, low, size, seed=sum(size))
    full_map = to_full_size(probs, size)
    pred = full_map > 0.5
    boxes = FullSizeProbs([(probs, 1.0)], size)
    preds = predicted_masks(boxes, 0.5)
    truths = truth_boxes(bits, size[1])
    assert np.array_equal(image_dice(preds, bits), dice_per_class(pred, truth).numpy())
    assert torch.equal(per_threshold_dice_boxes(boxes, bits)[:, 1:], per_threshold_dice(full_map, truth)[:, 1:])
    reference = confusion_counts(truth, pred).numpy()
    assert reference[2:].sum() > 0  # neighbouring bones do take each other's pixels here
    assert np.array_equal(confusion_counts_boxes(preds, bits, truths), reference)
    stats, expected = BoundaryStats(6), BoundaryStats(6)
    stats.update_boxes(preds, bits, truths)
    expected.update(truth, pred)
    for name in ("near", "wrong", "dist_sum", "hist"):
        assert np.array_equal(getattr(stats, name), getattr(expected, name)), name
    shown_truth, shown_pred = display_masks(preds, bits, size)
    assert np.array_equal(shown_truth, shrink(truth.numpy(), 640))
    assert np.array_equal(shown_pred, shrink(pred.numpy(), 640))


def _fake_run(folder, source, lr: float, dice: float, fold: int = 0):
    """A copy of `source` with another learning rate in its config and another score in its metrics."""
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.pt", "report"))
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["optimizer"]["lr"] = lr
    cfg["data"]["fold"] = fold
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        r["val_dice"] = dice
        r["val_dice_per_class"] = {k: dice for k in r["val_dice_per_class"]}
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_compare_runs_and_kfold(run_dir, tmp_path):
    _fake_run(tmp_path / "lr_low", run_dir, 1e-4, 0.5)
    kfold = tmp_path / "kfold"
    _fake_run(kfold / "fold0", run_dir, 3e-4, 0.6)
    _fake_run(kfold / "fold1", run_dir, 3e-4, 0.8, fold=1)
    (kfold / "folds.json").write_text("{}")
    md, csv_path, page = write_comparison([str(run_dir), str(tmp_path / "lr_low"), str(kfold)], tmp_path / "cmp")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["run"] for r in rows] == ["run", "lr_low", "kfold/fold0", "kfold/fold1", "kfold (mean ± std)"]
    assert [r["data.fold"] for r in rows] == ["0", "0", "0", "1", ""]
    assert "model.arch" not in rows[0]  # the same in every run: not a column
    assert [r["optimizer.lr"] for r in rows] == ["0.001", "0.0001", "0.0003", "0.0003", "0.0003"]
    assert rows[1]["best val Dice"] == "0.5000" and rows[4]["best val Dice"] == "0.7000 ± 0.1000"
    assert rows[4]["Radius"] == "0.7000 ± 0.1000" and rows[4]["epochs"] == "1.0 ± 0.0"
    assert "| kfold (mean ± std) |" in md.read_text() and "<td>0.7000 ± 0.1000</td>" in page.read_text()


def test_bad_input_is_one_line(run_dir, tmp_path):
    (run_dir / "metrics.jsonl").rename(tmp_path / "metrics.jsonl")
    run = subprocess.run([sys.executable, "analyze.py", "--run", str(run_dir)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == f"error: {run_dir / 'metrics.jsonl'}: no metrics file (not a run directory, or " \
                                 "no epoch has finished)"
    (tmp_path / "metrics.jsonl").rename(run_dir / "metrics.jsonl")
    state = torch.load(run_dir / "best.pt", weights_only=True)
    state["classes"] = state["classes"][:-1]
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(UserError, match=r"other\.pt: the checkpoint's classes differ"):
        analyze_run(str(run_dir), checkpoint=str(tmp_path / "other.pt"), progress=False)
    with pytest.raises(UserError, match=r"missing\.pt: checkpoint not found"):
        analyze_run(str(run_dir), checkpoint=str(tmp_path / "missing.pt"), progress=False)


def test_empty_validation_fold_is_an_error(run_dir, monkeypatch):
    import dataclasses

    import analysis.analyze_run

    real = analysis.analyze_run.prepare_fold
    monkeypatch.setattr(analysis.analyze_run, "prepare_fold", lambda *args: dataclasses.replace(
        real(*args), val_indices=np.array([], dtype=np.int64)))
    with pytest.raises(UserError, match=r"the validation fold 0 of 3 is empty"):
        analyze_run(str(run_dir), progress=False)

