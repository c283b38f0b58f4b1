"""The synthetic generator must reproduce the real dataset's layout and quirks, and draw learnable masks."""
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest

from tasks.handbone.synthetic import HAND_BONE_CLASSES, generate
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SIZE, IDS, TEST_IDS = 256, 10, 2
NAME = re.compile(r"^image\d{13}(_[RL])?$")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("synth") / "ds", IDS, TEST_IDS, size=SIZE, seed=0, progress=False)


def _records(root):
    for path in sorted((root / "train" / "outputs_json").glob("*/*.json")):
        yield path, json.loads(path.read_text(encoding="utf-8"))


def _masks(record):
    masks = {}
    for ann in record["annotations"]:
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.fillPoly(mask, [np.array(ann["points"], np.int32)], 1)
        masks[ann["label"]] = mask
    return masks


def test_layout_and_names(root):
    assert sorted(p.name for p in root.iterdir()) == ["meta_data.xlsx", "test", "train"]
    train_ids = sorted(p.name for p in (root / "train" / "DCM").iterdir())
    assert train_ids == [f"ID{i:03d}" for i in range(IDS)]
    assert sorted(p.name for p in (root / "train" / "outputs_json").iterdir()) == train_ids
    assert sorted(p.name for p in (root / "test" / "DCM").iterdir()) == [f"ID{i:03d}" for i in range(IDS, IDS + TEST_IDS)]
    assert sorted(p.name for p in (root / "test").iterdir()) == ["DCM"]

    styles = set()
    for folder in [*(root / "train" / "DCM").iterdir(), *(root / "test" / "DCM").iterdir()]:
        files = sorted(folder.iterdir())
        assert len(files) == 2 and all(f.suffix == ".png" for f in files)
        stems = [f.stem for f in files]
        assert all(NAME.match(s) for s in stems), stems
        suffixes = sorted(s[-2:] for s in stems if s[-2] == "_")
        assert suffixes in ([], ["_L", "_R"])
        styles.add(bool(suffixes))
        if folder.parent.parent.name == "train":
            jsons = sorted(p.stem for p in (root / "train" / "outputs_json" / folder.name).iterdir())
            assert jsons == stems
    assert styles == {True, False}


def test_meta_data(root):
    rows = list(openpyxl.load_workbook(root / "meta_data.xlsx").active.iter_rows(values_only=True))
    assert rows[0] == ("ID", "나이", "성별", "체중(몸무게)", "키(신장)")
    assert [r[0] for r in rows[1:]] == list(range(IDS + TEST_IDS))
    sexes = [r[2] for r in rows[1:]]
    assert any(s.startswith("_x0008_") for s in sexes)
    assert {s.removeprefix("_x0008_") for s in sexes} <= {"남", "여"}
    assert all(isinstance(v, int) for r in rows[1:] for v in (r[1], r[3], r[4]))


def test_json_schema_and_pngs(root):
    records = list(_records(root))
    assert len(records) == 2 * IDS
    for path, rec in records:
        assert set(rec) == {"annotations", "attributes", "file_id", "filename", "parent_path",
                            "last_modifier_id", "metadata", "last_workers"}
        assert rec["filename"] == path.stem + ".jpg"
        assert rec["parent_path"] == f"/train/DCM/{path.parent.name}"
        assert rec["metadata"] == {"height": 3060, "width": 3060}
        assert [a["label"] for a in rec["annotations"]] == list(HAND_BONE_CLASSES)
        for ann in rec["annotations"]:
            assert ann["type"] == "poly_seg" and ann["attributes"] == {} and isinstance(ann["id"], str)
            pts = ann["points"]
            assert len(pts) >= 3
            assert all(type(v) is int and 0 <= v < SIZE for p in pts for v in p)
        image = cv2.imread(str(root / "train" / "DCM" / path.parent.name / (path.stem + ".png")), cv2.IMREAD_UNCHANGED)
        assert image.shape == (SIZE, SIZE) and image.dtype == np.uint8


def test_bones_overlap_and_are_visible(root):
    pis_tri = 0
    for path, rec in _records(root):
        masks = _masks(rec)
        assert all(m.any() for m in masks.values())
        assert (sum(m.astype(np.int32) for m in masks.values()) >= 2).any()
        pis_tri += bool((masks["Pisiform"] & masks["Triquetrum"]).any())
        image = cv2.imread(str(root / "train" / "DCM" / path.parent.name / (path.stem + ".png")), cv2.IMREAD_GRAYSCALE)
        bones = np.maximum.reduce(list(masks.values())).astype(bool)
        assert image[bones].mean() > image[~bones].mean() + 40  # bones stand out from tissue and background
    assert pis_tri >= 0.8 * 2 * IDS


def test_left_hand_is_mirrored(root):
    def thumb_side(rec):
        masks = _masks(rec)
        x = {k: np.nonzero(masks[k])[1].mean() for k in ("finger-1", "finger-16")}
        return np.sign(x["finger-1"] - x["finger-16"])

    for folder in (root / "train" / "outputs_json").iterdir():
        sides = {p.stem: thumb_side(json.loads(p.read_text(encoding="utf-8"))) for p in folder.iterdir()}
        assert sorted(sides.values()) == [-1, 1]
        for stem, side in sides.items():
            if stem.endswith("_R"):
                assert side == -1  # a right hand in PA view has its thumb on the image's left


def test_deterministic(root, tmp_path):
    again = generate(tmp_path / "again", IDS, TEST_IDS, size=SIZE, seed=0, progress=False)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temporary directory left behind


def test_refuses_non_empty_output(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="ds"):
        generate(tmp_path / "ds", 1, 0, size=128, progress=False)
    with pytest.raises(UserError, match="--size"):
        generate(tmp_path / "other", 1, 0, size=64, progress=False)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tasks.handbone.synthetic", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli(tmp_path):
    out = tmp_path / "ds"
    args = ("--out", str(out), "--ids", "1", "--test-ids", "1", "--size", "128", "--seed", "3")
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert len(list(out.rglob("*.png"))) == 4 and len(list(out.rglob("*.json"))) == 2
    again = _cli(*args)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error:") and str(out) in again.stderr
    bad = _cli("--out", str(tmp_path / "x"), "--ids", "0")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --ids must be >= 1, got 0"
