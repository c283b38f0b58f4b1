import json
import os

import numpy as np
import pytest
import torch

from data.cache import open_cache
from data.dataset import ImageDataset, TrainDataset, unpack_mask_bits
from data.splits import group_kfold
from tasks.handbone.layout import HandboneLayout
from tasks.handbone.reader import rasterize, read_meta, read_polygons, scan_split
from utils.config import TaskConfig
from utils.errors import ConfigError, DataError
from utils.images import read_gray, resize_image


def test_scan_pairs_by_folder_and_stem(dataset_root):
    samples = scan_split(dataset_root, "train")
    assert len(samples) == 12 and [s.key for s in samples] == sorted(s.key for s in samples)
    for s in samples:
        assert s.annotation.stem == s.image.stem and s.annotation.parent.name == s.image.parent.name == s.group
        # the JSON names a .jpg of another size: pairing must not rely on it
        assert json.loads(s.annotation.read_text())["filename"].endswith(".jpg")
    assert any(s.image.stem.endswith(("_R", "_L")) for s in samples)
    test = scan_split(dataset_root, "test")
    assert len(test) == 4 and all(s.annotation is None for s in test)


def test_overlaps_are_kept(dataset_root, classes):
    s = scan_split(dataset_root, "train")[0]
    image = read_gray(s.image)
    polygons, warnings = read_polygons(s.annotation, classes, *image.shape)
    assert not warnings and len(polygons) == 29
    masks = rasterize(polygons, len(classes), image.shape, image.shape)
    assert (masks.sum(0) >= 2).any(), "overlapping bones must give pixels with two classes"
    # at the original size, rasterizing is exactly cv2.fillPoly on the integer points
    import cv2
    cls, points = polygons[classes.index("Pisiform")]
    expected = np.zeros(image.shape, np.uint8)
    cv2.fillPoly(expected, [points.astype(np.int32)], 1)
    assert np.array_equal(masks[cls], expected)


def test_cache_content_hit_and_rebuild(dataset_copy, classes, tmp_path):
    samples = scan_split(dataset_copy, "train")
    cache = open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=2, progress=False)
    image = read_gray(samples[1].image)
    assert np.array_equal(cache.image(1), resize_image(image, 64))
    polygons, _ = read_polygons(samples[1].annotation, classes, *image.shape)
    assert np.array_equal(cache.mask(1), rasterize(polygons, 29, image.shape, (64, 64)))
    assert cache.original_size(1) == image.shape
    built = (cache.folder / "index.json").stat().st_mtime_ns
    again = open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert again.folder == cache.folder and (again.folder / "index.json").stat().st_mtime_ns == built  # a hit
    assert open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 32, tmp_path / "c", progress=False).folder != cache.folder  # new size
    ann = samples[0].annotation
    data = json.loads(ann.read_text())
    data["annotations"] = data["annotations"][:-1]
    ann.write_text(json.dumps(data))
    os.utime(ann, ns=(1, 1))
    changed = open_cache(scan_split(dataset_copy, "train"), HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert changed.folder != cache.folder and changed.mask(0)[-1].sum() == 0  # the dropped Ulna is gone
    assert not list((tmp_path / "c").glob("*.tmp-*")), "no half-built cache folder is left behind"


def test_unpack_bits_matches_numpy():
    rng = np.random.default_rng(0)
    masks = (rng.random((3, 5, 21)) > 0.5).astype(np.uint8)
    bits = np.packbits(masks, axis=2)
    assert torch.equal(unpack_mask_bits(torch.from_numpy(bits), 21), torch.from_numpy(masks))


def test_train_crops_keep_image_and_mask_aligned(dataset_root, classes, tmp_path):
    cache = open_cache(scan_split(dataset_root, "train"), HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    ds = TrainDataset(cache, [2], crop_size=32)
    torch.manual_seed(0)
    for _ in range(5):
        item = ds[0]
        image, mask = item["image"][0].numpy(), unpack_mask_bits(item["mask_bits"], 32).numpy()
        full_image, full_mask = cache.image(2), cache.mask(2)
        hits = [(y, x) for y in range(33) for x in range(0, 33, 8)
                if np.array_equal(full_image[y:y + 32, x:x + 32], image) and np.array_equal(full_mask[:, y:y + 32, x:x + 32], mask)]
        assert hits
    assert ImageDataset(cache)[3]["image"].shape == (1, 64, 64)


def test_group_kfold_never_splits_a_person(dataset_root):
    groups = [s.group for s in scan_split(dataset_root, "train")]
    seen = []
    for fold in range(3):
        train, val = group_kfold(groups, 3, fold)
        assert not {groups[i] for i in train} & {groups[i] for i in val}
        seen.extend(val)
    assert sorted(seen) == list(range(len(groups)))
    with pytest.raises(ConfigError, match="out of range"):
        group_kfold(groups, 3, 3)
    with pytest.raises(DataError, match="persons"):
        group_kfold(groups, 7, 0)


def test_meta_table(dataset_root):
    meta = read_meta(dataset_root)
    assert set(meta) == {f"ID{i:03d}" for i in range(8)}
    assert all(not str(m["sex"]).startswith("_x0008_") for m in meta.values())


# ------------------------------------------------------------------------------------------- bad input


def _first(root):
    return scan_split(root, "train")[0]


def test_image_without_annotation(dataset_copy):
    s = _first(dataset_copy)
    s.annotation.unlink()
    with pytest.raises(DataError, match="image without an annotation") as e:
        scan_split(dataset_copy, "train")
    assert str(s.image) in str(e.value)


def test_annotation_without_image(dataset_copy):
    s = _first(dataset_copy)
    s.image.unlink()
    with pytest.raises(DataError, match="annotation without an image") as e:
        scan_split(dataset_copy, "train")
    assert str(s.annotation) in str(e.value)


def test_empty_train_folder(tmp_path):
    (tmp_path / "train" / "DCM").mkdir(parents=True)
    with pytest.raises(DataError, match="no PNG images"):
        scan_split(tmp_path, "train")
    with pytest.raises(DataError, match="image folder not found"):
        scan_split(tmp_path / "nowhere", "train")


def test_unreadable_image(dataset_copy, classes, tmp_path):
    s = _first(dataset_copy)
    s.image.write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable image") as e:
        open_cache(scan_split(dataset_copy, "train"), HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert str(s.image) in str(e.value)


def _edit_annotations(path, edit):
    data = json.loads(path.read_text())
    edit(data["annotations"])
    path.write_text(json.dumps(data))


def test_unknown_label(dataset_copy, classes):
    s = _first(dataset_copy)
    _edit_annotations(s.annotation, lambda anns: anns[0].update(label="finger-99"))
    with pytest.raises(DataError, match="unknown class label 'finger-99'") as e:
        read_polygons(s.annotation, classes, 128, 128)
    assert str(s.annotation) in str(e.value)


def test_short_polygon_and_points_outside_are_warned_and_counted(dataset_copy, classes, tmp_path):
    s = _first(dataset_copy)

    def edit(anns):
        anns[0]["points"] = anns[0]["points"][:2]
        anns[1]["points"][0] = [500, -3]
    _edit_annotations(s.annotation, edit)
    polygons, warnings = read_polygons(s.annotation, classes, 128, 128)
    assert len(polygons) == 28 and len(warnings) == 2
    assert "skipped polygon 0 (finger-1) with 2 point(s)" in warnings[0] and "clipped 1 point(s) of finger-2" in warnings[1]
    cache = open_cache(scan_split(dataset_copy, "train"), HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert len(cache.warnings) == 2


def test_broken_json(dataset_copy, classes):
    s = _first(dataset_copy)
    s.annotation.write_text("{not json")
    with pytest.raises(DataError, match="not a valid annotation JSON"):
        read_polygons(s.annotation, classes, 128, 128)
