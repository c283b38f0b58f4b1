"""analyze.py on tiny multiclass (trash) runs: the report page (in headless Chromium too), its figures, its mIoU
against metrics.jsonl, the confusion matrix against a hand-made case, --compare in mIoU terms (k-fold too, and a
one-line error for runs of two modes); the run's tracking logs label-map overlays."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import yaml

from analysis.compare import write_comparison
from analysis.multiclass import analyze_fold_multiclass, image_iou, label_confusion, row_normalised
from data.pipeline import prepare_fold
from tasks.coco.pseudo import write_pseudo_coco
from tasks.coco.reader import read_coco
from tasks.coco.synthetic import generate
from tasks.registry import build_task
from tests.browser import open_page
from tests.conftest import ROOT
from tests.test_coco_task import DEMO, fit, run, trash_overrides
from trainer.inference import load_member
from trainer.kfold import train_folds
from trainer.runtime import setup_runtime
from utils.config import load_config, to_dict
from utils.errors import UserError

PAGE_STATE = """JSON.stringify({
  images: [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth, done: i.complete})),
  best: document.getElementById('best-miou').textContent})"""


def test_confusion_matrix_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 0]])
    counts = label_confusion(truth, pred, 3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [2, 0, 1]]
    assert np.allclose(row_normalised(counts), [[2 / 3, 1 / 3, 0], [0, 1, 0], [2 / 3, 0, 1 / 3]])
    assert np.allclose(image_iou(counts), [2 / 5, 2 / 3, 1 / 3])
    assert np.isnan(image_iou(label_confusion(truth, pred, 4))[3])  # in neither map


@pytest.fixture(scope="module")
def trash_config(tmp_path_factory):
    """A one-epoch config on a tiny trash set; extra overrides on top."""
    tmp = tmp_path_factory.mktemp("mcdata")
    root = generate(tmp / "ds", train=10, test=2, size=64, seed=3, progress=False)

    def make(*extra: str):
        return load_config(DEMO, trash_overrides(root, tmp / "cache") + [
            "trainer.epochs=1", "logging.backends=[tensorboard]", "logging.image_every=1", *extra])
    return make


@pytest.fixture(scope="module")
def trash_run(trash_config, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcrun") / "run"
    fit(trash_config(), folder)
    return folder


@pytest.fixture(scope="module")
def trash_report(trash_run):
    """analyze.py --run on the tiny run: (its completed process, the report page)."""
    result = run("analyze.py", "--run", trash_run, "--worst", 2, "--cleansing", 2)
    assert result.returncode == 0, result.stderr
    return result, trash_run / "report" / "index.html"


def _metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _best_miou(folder) -> float:
    return max(r["val_miou"] for r in _metrics(folder) if r.get("val_miou") is not None)


def test_analyze_multiclass_run(trash_run, trash_report):
    result, _ = trash_report
    page = (trash_run / "report" / "index.html").read_text()
    images = re.findall(r"src='([^']+)'|src=\"([^\"]+)\"", page)
    names = {a or b for a, b in images}
    assert {"curves.png", "iou_per_class.png", "confusion.png", "boundary.png", "worst_00.png",
            "cleansing_00.png"} <= names
    for name in names:
        assert (trash_run / "report" / name).stat().st_size > 0, name
    assert "threshold" not in page.lower()
    best = _best_miou(trash_run)
    shown = re.search(r"id='best-miou'>([0-9.]+)<", page).group(1)
    recomputed = re.search(r"id='recomputed-miou'>([0-9.]+)<", page).group(1)
    assert shown == f"{best:.4f}" and recomputed == f"{best:.4f}"
    assert "warning" not in result.stderr


def test_multiclass_report_in_a_real_browser(chromium, trash_run, trash_report):
    state, errors = open_page(chromium, trash_report[1], PAGE_STATE)
    state = json.loads(state)
    assert errors == []
    names = {i["src"] for i in state["images"]}
    assert {"curves.png", "iou_per_class.png", "confusion.png", "boundary.png", "worst_00.png", "worst_01.png",
            "cleansing_00.png", "cleansing_01.png"} <= names
    assert all(i["done"] and i["width"] > 0 for i in state["images"])
    assert state["best"] == f"{_best_miou(trash_run):.4f}"


def test_compare_multiclass_runs_and_kfold(trash_config, trash_run, tmp_path):
    fit(trash_config("optimizer.lr=5e-4"), tmp_path / "lr_low")
    kfold = tmp_path / "kfold"
    cfg = trash_config("data.split=kfold", "data.n_splits=2")
    train_folds(cfg, kfold, [0, 1], setup_runtime(cfg.trainer), progress=False)
    md, csv_path, page = write_comparison([str(trash_run), str(tmp_path / "lr_low"), str(kfold)], tmp_path / "cmp")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["run"] for r in rows] == ["run", "lr_low", "kfold/fold0", "kfold/fold1", "kfold (mean ± std)"]
    header = list(rows[0])
    assert "best val mIoU" in header and "optimizer.lr" in header and not any("Dice" in h for h in header)
    assert [r["optimizer.lr"] for r in rows] == ["0.002", "0.0005", "0.002", "0.002", "0.002"]
    assert [r["data.fold"] for r in rows] == ["0", "0", "0", "1", ""]
    folds = [_best_miou(kfold / f"fold{k}") for k in (0, 1)]
    assert [r["best val mIoU"] for r in rows[:4]] == [
        f"{v:.4f}" for v in (_best_miou(trash_run), _best_miou(tmp_path / "lr_low"), *folds)]
    assert rows[4]["best val mIoU"] == f"{np.mean(folds):.4f} ± {np.std(folds):.4f}"
    best = max(_metrics(trash_run), key=lambda r: r["val_miou"])
    for name, value in best["val_miou_per_class"].items():  # a class in neither map has no IoU: an empty cell
        assert rows[0][name] == ("" if value is None else f"{value:.4f}"), name
    assert "| best val mIoU |" in md.read_text() and "<th>best val mIoU</th>" in page.read_text()


def test_compare_refuses_runs_of_two_modes(trash_run, tmp_path):
    multilabel = tmp_path / "hands"
    multilabel.mkdir()
    (multilabel / "config.yaml").write_text(yaml.safe_dump(to_dict(load_config(ROOT / "configs" / "demo.yaml"))))
    (multilabel / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val_dice": 0.5, "seconds": 1.0}) + "\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(trash_run))} is a multiclass run \(mIoU\) and "
                                        rf"{re.escape(str(multilabel))} a multilabel run \(Dice\)"):
        write_comparison([str(trash_run), str(multilabel)], tmp_path / "cmp")
    result = run("analyze.py", "--compare", trash_run, multilabel, "--out", tmp_path / "cmp")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(trash_run) in result.stderr and str(multilabel) in result.stderr
    assert not (tmp_path / "cmp").exists()


def test_tracking_logs_multiclass_overlays(trash_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trash_run), size_guidance={"images": 0}).Reload()
    tags = events.Tags()["images"]
    assert tags and all(len(events.Images(t)) == 1 and events.Images(t)[0].width > 0 for t in tags)


def test_cleansing_leaves_out_pseudo_labelled_images(trash_config, trash_run, tmp_path):
    """Pseudo-labels are the model's own predictions, not label errors: with every training image asked for, the
    cleansing candidates are exactly the fold's hand-labelled training images, each once."""
    plain = trash_config()
    root, classes = plain.data.root, plain.task.classes
    test = read_coco(f"{root}/test.json", root, classes, labelled=False).samples
    everything_paper = np.full((64, 64), classes.index("Paper"), np.uint8)  # far from any prediction
    write_pseudo_coco([(s, everything_paper, 1.0) for s in test], tmp_path / "pseudo.json", classes, 0.5, {})
    cfg = trash_config(f"data.pseudo_roots=[{tmp_path / 'pseudo.json'}]")
    runtime = setup_runtime(cfg.trainer)
    data = prepare_fold(cfg, build_task(cfg).layout, runtime, progress=False)
    pseudo = {data.cache.keys[i] for i in data.train_indices if i >= data.n_labelled}
    assert pseudo == {s.key for s in test}  # they do train
    base = prepare_fold(plain, build_task(plain).layout, runtime, progress=False)
    labelled = {base.cache.keys[i] for i in base.train_indices}
    member = load_member(trash_run / "best.pt", cfg, runtime)
    analysis = analyze_fold_multiclass(member, data, k_worst=1, cleansing=len(data.cache), progress=False)
    keys = [key for _, key, _ in analysis.cleansing]
    assert sorted(keys) == sorted(labelled) and not pseudo & set(keys)
