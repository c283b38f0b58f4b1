"""analyze.py --run on a tiny multiclass (trash) run: the page, its figures, its mIoU against metrics.jsonl, and the
confusion matrix against a hand-made case; the run's tracking logs label-map overlays."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from analysis.multiclass import image_iou, label_confusion, row_normalised
from data.synthetic_coco import generate
from tests.test_coco_task import DEMO, fit, run, trash_overrides
from utils.config import load_config


def test_confusion_matrix_by_hand():
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 0]])
    counts = label_confusion(truth, pred, 3)
    assert counts.tolist() == [[2, 1, 0], [0, 2, 0], [2, 0, 1]]
    assert np.allclose(row_normalised(counts), [[2 / 3, 1 / 3, 0], [0, 1, 0], [2 / 3, 0, 1 / 3]])
    assert np.allclose(image_iou(counts), [2 / 5, 2 / 3, 1 / 3])
    assert np.isnan(image_iou(label_confusion(truth, pred, 4))[3])  # in neither map


@pytest.fixture(scope="module")
def trash_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcrun")
    root = generate(tmp / "ds", train=10, test=1, size=64, seed=3, progress=False)
    cfg = load_config(DEMO, trash_overrides(root, tmp / "cache") + [
        "trainer.epochs=1", "logging.backends=[tensorboard]", "logging.image_every=1"])
    fit(cfg, tmp / "run")
    return tmp / "run"


def test_analyze_multiclass_run(trash_run):
    result = run("analyze.py", "--run", trash_run, "--worst", 2, "--cleansing", 2)
    assert result.returncode == 0, result.stderr
    page = (trash_run / "report" / "index.html").read_text()
    images = re.findall(r"src='([^']+)'|src=\"([^\"]+)\"", page)
    names = {a or b for a, b in images}
    assert {"curves.png", "iou_per_class.png", "confusion.png", "boundary.png", "worst_00.png",
            "cleansing_00.png"} <= names
    for name in names:
        assert (trash_run / "report" / name).stat().st_size > 0, name
    assert "threshold" not in page.lower()
    records = [json.loads(line) for line in (trash_run / "metrics.jsonl").read_text().splitlines()]
    best = max(r["val_miou"] for r in records if r.get("val_miou") is not None)
    shown = re.search(r"id='best-miou'>([0-9.]+)<", page).group(1)
    recomputed = re.search(r"id='recomputed-miou'>([0-9.]+)<", page).group(1)
    assert shown == f"{best:.4f}" and recomputed == f"{best:.4f}"
    assert "warning" not in result.stderr


def test_tracking_logs_multiclass_overlays(trash_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trash_run), size_guidance={"images": 0}).Reload()
    tags = events.Tags()["images"]
    assert tags and all(len(events.Images(t)) == 1 and events.Images(t)[0].width > 0 for t in tags)
