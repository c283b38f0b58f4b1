"""The COCO (trash) task's pieces: reader and label maps, folds, mIoU, submission, oversampling, copy-paste, CRF."""
from __future__ import annotations

import json
import math
import shutil

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from data.oversample import class_factors, oversample_indices
from data.splits import stratified_kfold
from modes.crf import dense_crf
from modes.miou import ConfusionMatrix, format_iou_table
from tasks.coco.reader import class_presence, decode_rle, label_map, read_coco
from tasks.coco.submission import SUBMISSION_SIZE, TrashSubmissionWriter, save_label_png, validate_trash_submission
from tasks.coco.synthetic import TRASH_CATEGORIES, TRASH_CLASSES, generate
from transforms.copy_paste import CopyPaste, paste_object
from utils.errors import ConfigError, DataError, UserError

CLASSES = list(TRASH_CLASSES)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("coco") / "trash", train=40, test=4, size=96, seed=1, progress=False)


@pytest.fixture
def coco_copy(coco_root, tmp_path):
    return shutil.copytree(coco_root, tmp_path / "trash")


def _write(root, name, data):
    (root / name).write_text(json.dumps(data))
    return root / name


def _one_image(root, annotations, size=20):
    cv2.imwrite(str(root / "a.jpg"), np.zeros((size, size, 3), np.uint8))
    return {"images": [{"id": 7, "file_name": "a.jpg", "height": size, "width": size}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(TRASH_CATEGORIES)],
            "annotations": annotations}


# ------------------------------------------------------------------------------------------- layout and reader


def test_generator_layout(coco_root):
    names = sorted(p.name for p in coco_root.iterdir())
    assert names == ["batch_01_vt", "test.json", "train.json", "train_all.json", "val.json"]
    all_ = json.loads((coco_root / "train_all.json").read_text())
    assert [c["id"] for c in all_["categories"]] == list(range(1, 11))
    assert [c["name"] for c in all_["categories"]] == list(TRASH_CATEGORIES)
    assert all_["images"][0]["file_name"] == "batch_01_vt/0001.jpg"
    train, val = (json.loads((coco_root / f).read_text()) for f in ("train.json", "val.json"))
    ids = sorted(im["id"] for im in train["images"] + val["images"])
    assert ids == sorted(im["id"] for im in all_["images"])
    test = json.loads((coco_root / "test.json").read_text())
    assert len(test["images"]) == 4 and test["annotations"] == []
    kinds = {("rle-" + type(a["segmentation"]["counts"]).__name__) if isinstance(a["segmentation"], dict)
             else f"poly{min(len(a['segmentation']), 2)}" for a in all_["annotations"]}
    assert kinds == {"poly1", "poly2", "rle-str", "rle-list"}
    counts = np.bincount([a["category_id"] for a in all_["annotations"]], minlength=11)[1:]
    assert counts[8] < counts[1] and counts[9] < counts[1]  # Battery and Clothing are rare


def test_generator_refuses_existing_folder(coco_root):
    with pytest.raises(UserError, match="already exists"):
        generate(coco_root, train=4, test=0, size=64, progress=False)


def test_polygon_and_rle_give_the_same_mask(tmp_path):
    polygon = [[2.0, 2.0, 15.0, 3.0, 12.0, 16.0, 3.0, 12.0]]
    mask = decode_rle(mask_utils.merge(mask_utils.frPyObjects(polygon, 20, 20)))
    compressed = mask_utils.encode(np.asfortranarray(mask))
    flat = mask.reshape(-1, order="F")
    runs = np.diff(np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])).tolist()
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 2, "segmentation": polygon},
        {"id": 2, "image_id": 7, "category_id": 2,
         "segmentation": {"size": [20, 20], "counts": compressed["counts"].decode()}},
        {"id": 3, "image_id": 7, "category_id": 2, "segmentation": {"size": [20, 20], "counts": runs}},
    ]
    for ann in annotations:
        path = _write(tmp_path, "one.json", _one_image(tmp_path, [ann]))
        sample = read_coco(path, tmp_path, CLASSES).samples[0]
        assert np.array_equal(label_map(sample), mask * 2), ann["id"]
    assert mask.sum() > 50


def test_label_map_paints_larger_objects_first(tmp_path):
    big = [[0.0, 0.0, 19.0, 0.0, 19.0, 19.0, 0.0, 19.0]]
    small = [[5.0, 5.0, 10.0, 5.0, 10.0, 10.0, 5.0, 10.0]]
    # the small object comes first in the file: it must still be on top
    data = _one_image(tmp_path, [{"id": 1, "image_id": 7, "category_id": 9, "segmentation": small},
                                 {"id": 2, "image_id": 7, "category_id": 1, "segmentation": big}])
    sample = read_coco(_write(tmp_path, "a.json", data), tmp_path, CLASSES).samples[0]
    labels = label_map(sample)
    assert labels[7, 7] == 9 and labels[1, 1] == 1 and labels[15, 15] == 1
    assert label_map(sample, (10, 10)).shape == (10, 10)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("images"), "not a COCO JSON"),
    (lambda d: d["annotations"][0].update(category_id=11), "annotation 1 has category_id 11"),
    (lambda d: d["images"][0].update(file_name="missing.jpg"), "image 7 file .*missing.jpg not found"),
    (lambda d: d["annotations"][0].update(image_id=3), "annotation 1 refers to image_id 3"),
    (lambda d: d["categories"][0].update(name="Rubber duck"), "category 1 'Rubber duck' is not in task.classes"),
])
def test_bad_json_is_one_line_error(tmp_path, change, message):
    data = _one_image(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1,
                                  "segmentation": [[1.0, 1.0, 8.0, 1.0, 8.0, 8.0]]}])
    change(data)
    path = _write(tmp_path, "bad.json", data)
    with pytest.raises(DataError, match=message) as e:
        read_coco(path, tmp_path, CLASSES)
    assert "bad.json" in str(e.value) and "\n" not in str(e.value)


def test_not_json_and_missing_file(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match=r"x\.json: not a valid JSON"):
        read_coco(tmp_path / "x.json", tmp_path, CLASSES)
    with pytest.raises(DataError, match=r"nothing\.json: COCO JSON not found"):
        read_coco(tmp_path / "nothing.json", tmp_path, CLASSES)


def test_empty_and_short_segmentations_are_counted_warnings(tmp_path):
    data = _one_image(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 1, "segmentation": []},
        {"id": 2, "image_id": 7, "category_id": 1, "segmentation": [[1.0, 1.0, 5.0, 5.0]]},
        {"id": 3, "image_id": 7, "category_id": 1, "segmentation": [[1.0, 1.0, 5.0, 5.0], [1, 1, 9, 1, 9, 9]]},
        {"id": 4, "image_id": 7, "category_id": 1, "segmentation": {"size": [20, 20], "counts": [400]}},
    ])
    result = read_coco(_write(tmp_path, "w.json", data), tmp_path, CLASSES)
    assert len(result.warnings) == 4
    assert all("w.json: annotation" in w for w in result.warnings)
    assert "annotation 1 (image 7): empty segmentation" in result.warnings[0]
    assert "fewer than 3 points" in result.warnings[1] and "1 polygon ring(s)" in result.warnings[2]
    assert len(result.samples[0].objects) == 1  # only annotation 3's valid ring is kept


# ------------------------------------------------------------------------------------------- folds


def test_stratified_folds_cover_every_image_once_and_spread_classes(coco_root):
    samples = read_coco(coco_root / "train_all.json", coco_root, CLASSES).samples
    presence = class_presence(samples, len(CLASSES))
    k = 4
    folds = [stratified_kfold(presence, k, f, seed=0) for f in range(k)]
    vals = np.concatenate([v for _, v in folds])
    assert sorted(vals.tolist()) == list(range(len(samples)))  # every image once, none in two folds
    for train, val in folds:
        assert not set(train) & set(val) and len(train) + len(val) == len(samples)
    per_fold = np.stack([presence[v].sum(0) for _, v in folds])
    even = presence.sum(0) / k
    assert np.all(np.abs(per_fold - even) <= 1.0), per_fold
    assert np.array_equal(stratified_kfold(presence, k, 1, seed=0)[1], folds[1][1])  # deterministic
    with pytest.raises(ConfigError, match=r"data\.fold"):
        stratified_kfold(presence, k, k)


# ------------------------------------------------------------------------------------------- metric


def test_miou_matches_hand_computation():
    truth = torch.tensor([[0, 0, 1, 1], [0, 2, 2, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 3, 1]])  # class 3 only in the prediction, class 4 nowhere
    cm = ConfusionMatrix(5, "cpu")
    cm.update(pred[:1], truth[:1])  # accumulated over "images"
    cm.update(pred[1:], truth[1:])
    miou, iou, accuracy = cm.compute()
    # class 0: TP 2 (0,0),(1,0); FP 0; FN 1 (0,1) -> 2/3.  class 1: TP 3, FP 1, FN 0 -> 3/4.
    # class 2: TP 1, FP 0, FN 1 -> 1/2.  class 3: TP 0, FP 1, FN 0 -> 0.  class 4: absent -> NaN, not averaged.
    assert iou[:4] == pytest.approx([2 / 3, 3 / 4, 1 / 2, 0.0])
    assert math.isnan(iou[4])
    assert miou == pytest.approx((2 / 3 + 3 / 4 + 1 / 2 + 0) / 4)
    assert accuracy == pytest.approx(6 / 8)
    table = format_iou_table(["bg", "a", "b", "c", "d"], iou)
    assert "0.6667" in table and "-" in table


# ------------------------------------------------------------------------------------------- submission


def test_submission_layout_and_validator(coco_root, tmp_path):
    test = json.loads((coco_root / "test.json").read_text())
    names = [im["file_name"] for im in test["images"]]
    out = tmp_path / "sub.csv"
    with TrashSubmissionWriter(out) as writer:
        for i, name in enumerate(names):
            labels = np.zeros((96, 96), np.uint8)
            labels[:48] = i + 1
            writer.write_image(name, labels)
    lines = out.read_text().splitlines()
    assert lines[0] == "image_id,PredictionString" and len(lines) == 1 + len(names)
    image_id, text = lines[1].split(",")
    values = np.array(text.split(), dtype=int).reshape(SUBMISSION_SIZE, SUBMISSION_SIZE)
    assert image_id == names[0] and (values[:128] == 1).all() and (values[128:] == 0).all()
    assert validate_trash_submission(out, coco_root / "test.json", 11) == []

    rows = lines[1:]
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], rows[1], rows[0], *rows[2:]]) + "\n")
    assert "not in test.json order" in validate_trash_submission(bad, coco_root / "test.json", 11)[0]
    bad.write_text("\n".join([lines[0], *rows[:-1]]) + "\n")
    assert "have no row" in validate_trash_submission(bad, coco_root / "test.json", 11)[0]
    assert "label 3 outside 0..2" in validate_trash_submission(out, coco_root / "test.json", 3)[0]
    bad.write_text("\n".join([lines[0], f"{names[0]},1 2 3", *rows[1:]]) + "\n")
    assert "3 labels, expected 65536" in validate_trash_submission(bad, coco_root / "test.json", 11)[0]
    bad.write_text("image_name,class,rle\n")
    assert "header" in validate_trash_submission(bad, coco_root / "test.json", 11)[0]


def test_writer_leaves_no_file_on_error(tmp_path):
    out = tmp_path / "sub.csv"
    with pytest.raises(RuntimeError), TrashSubmissionWriter(out) as writer:
        writer.write_image("a.jpg", np.zeros((4, 4), np.uint8))
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_save_label_png(tmp_path):
    labels = np.random.default_rng(0).integers(0, 11, (30, 40)).astype(np.uint8)
    path = save_label_png(tmp_path, "batch_01_vt/0001.jpg", labels)
    assert path == tmp_path / "batch_01_vt" / "0001.png"
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), labels)


# ------------------------------------------------------------------------------------------- sampling, augmentation


def test_oversampling_repeats_images_with_rare_classes():
    presence = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 1, 1]], np.uint8)
    classes = ["Background", "common", "rare"]
    factors = class_factors(presence, classes, {}, inverse_frequency=True, max_factor=10)
    assert factors.tolist() == [1.0, 1.0, 4.0]
    out = oversample_indices(np.arange(4), presence, factors, seed=0)
    assert np.bincount(out).tolist() == [1, 1, 1, 4]
    factors = class_factors(presence, classes, {"rare": 2.5}, inverse_frequency=False, max_factor=10)
    counts = [np.bincount(oversample_indices(np.arange(4), presence, factors, seed=s))[3] for s in range(40)]
    assert set(counts) == {2, 3}
    with pytest.raises(ConfigError, match="unknown class 'raer'"):
        class_factors(presence, classes, {"raer": 2}, False, 4)


def test_copy_paste_keeps_labels_consistent_with_pixels():
    rng = np.random.default_rng(0)
    donor_image = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    donor_labels = np.zeros((32, 32), np.uint8)
    donor_labels[4:10, 5:12] = 9
    donor_labels[20:30, 20:30] = 3
    image = np.full((32, 32, 3), 7, np.uint8)
    labels = np.ones((32, 32), np.uint8)
    paste = CopyPaste([9], {9: np.array([0])}, lambda i: (donor_image, donor_labels), p=1.0, max_objects=1)
    new_image, new_labels = paste(image, labels, rng)
    pasted = new_labels == 9
    assert pasted.sum() == 6 * 7  # the whole object, once
    assert set(np.unique(new_labels)) == {1, 9}
    assert (new_image[~pasted] == 7).all()  # nothing else changed
    ys, xs = np.nonzero(pasted)
    patch = new_image[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    source = donor_image[4:10, 5:12]
    assert np.array_equal(patch, source) or np.array_equal(patch, source[:, ::-1])  # possibly flipped
    assert (labels == 1).all() and (image == 7).all()  # inputs untouched
    assert not paste_object(image, labels, donor_image, donor_labels, 5, rng)  # no such class in the donor


def test_dense_crf_snaps_uncertain_pixels_to_image_edges():
    image = np.zeros((24, 24, 3), np.uint8)
    image[:, 12:] = 200
    probs = np.full((2, 24, 24), 0.5, np.float32)
    probs[:, :, :10] = np.array([0.8, 0.2])[:, None, None]
    probs[:, :, 14:] = np.array([0.3, 0.7])[:, None, None]
    labels = dense_crf(image, probs).argmax(0)
    assert (labels[:, :12] == 0).all() and (labels[:, 12:] == 1).all()
