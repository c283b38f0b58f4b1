"""Hostile inputs in the two task layouts (issue #17): COCO values that would reach pycocotools or a path unchecked,
test images that disagree with test.json, --save-masks and pseudo-label writes that fail, deeply nested or
out-of-range hand-bone JSON, duplicated rows in a hard vote. Each ends with a one-line error (exit status 2 from an
entry script) or a counted warning naming what was skipped; never a crash, a runaway allocation, a file outside its
folder or a label drawn from uninitialized memory."""
from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

import ensemble
import inference
import pseudo_label
from tasks.coco.pseudo import write_pseudo_coco
from tasks.coco.reader import label_map, read_coco, rle_string_counts
from tasks.coco.submission import SUBMISSION_SIZE, save_label_png
from tasks.coco.synthetic import TRASH_CATEGORIES, TRASH_CLASSES, generate
from tasks.handbone.pseudo import write_pseudo_labels
from tasks.handbone.reader import read_polygons
from tasks.handbone.synthetic import HAND_BONE_CLASSES
from tests.conftest import ROOT
from tests.test_hostile import cli_error
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.cli import run_main
from utils.config import load_config
from utils.errors import DataError, UserError

CLASSES = list(TRASH_CLASSES)
TRASH = str(ROOT / "configs" / "trash_demo.yaml")


def one_image(root: Path, annotations: list, size: int = 20, **image) -> dict:
    """A COCO dict of one black size x size image `a.jpg` (id 7) with `annotations`; `image` overrides its record."""
    cv2.imwrite(str(root / "a.jpg"), np.zeros((size, size, 3), np.uint8))
    return {"images": [{"id": 7, "file_name": "a.jpg", "height": size, "width": size, **image}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(TRASH_CATEGORIES)],
            "annotations": annotations}


def ann(segmentation, ann_id: int = 1, **fields) -> dict:
    return {"id": ann_id, "image_id": 7, "category_id": 1, "segmentation": segmentation, **fields}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


SQUARE = [2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]


# --------------------------------------------------------------------- the hard cases: memory, segfault, paths


def test_non_finite_or_far_polygon_coordinates_are_skipped_within_a_memory_limit(tmp_path):
    """pycocotools rasterizes a ring along its whole edge: a NaN, infinite or 1e12 coordinate made it allocate
    past 19 GB or segfault. Here they are counted warnings, read in a child process capped at 2 GB of address
    space, so a regression fails this test instead of taking the machine down."""
    far_rings = {2: [0, 0, 10, 0, float("nan"), 10], 3: [0, 0, float("inf"), 0, 10, 10],
                 4: [0, 0, 1e12, 0, 10, 1e12], 5: [0, 0, -1e9, 0, 10, 10], 6: [0, 0, 41, 0, 10, 10],
                 7: [0, 0, "HUGE", 0, 10, 10]}
    annotations = [ann([SQUARE], 1)] + [ann([ring], k) for k, ring in far_rings.items()]
    annotations.append(ann([SQUARE, far_rings[2]], 8))  # one good ring and one bad: the good one is kept
    text = json.dumps(one_image(tmp_path, annotations))  # NaN and Infinity literals, as Python's json reads them
    (tmp_path / "far.json").write_text(text.replace('"HUGE"', "1" + "0" * 400))  # an integer beyond float range
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tasks.coco.reader import read_coco
        result = read_coco({str(tmp_path / 'far.json')!r}, {str(tmp_path)!r}, {CLASSES!r})
        print(len(result.samples[0].objects))
        print("\\n".join(result.warnings))
    """)

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          preexec_fn=cap_memory)
    assert done.returncode == 0, done.stderr[-2000:]
    count, *warnings = done.stdout.strip().splitlines()
    assert count == "2"  # annotation 1 and the good ring of annotation 8
    assert len(warnings) == 7 and all("far.json: annotation" in w and "(image 7)" in w for w in warnings)
    for k in far_rings:
        assert any(w.startswith(f"{tmp_path / 'far.json'}: annotation {k} (image 7): no polygon ring left (1 polygon "
                                f"ring(s) with a NaN, infinite or far-out coordinate") for w in warnings), k
    assert any("annotation 8 (image 7): 1 polygon ring(s) with a NaN" in w and w.endswith("skipped")
               for w in warnings)


@pytest.mark.parametrize("file_name, problem", [
    ("../escape.jpg", "which is not a relative path inside the data root"),
    ("batch/../../escape.jpg", "which is not a relative path inside the data root"),
    ("/etc/hostname", "which is not a relative path inside the data root"),
    ("", "expected a relative path"),
    (12, "expected a relative path"),
    (["a.jpg"], r"\['a\.jpg'\], expected a relative path"),
])
def test_a_file_name_that_leaves_the_data_root_is_refused(tmp_path, file_name, problem):
    path = write_json(tmp_path / "bad.json", one_image(tmp_path, [], file_name=file_name))
    with pytest.raises(DataError, match=rf"^{path}: image 7 has file_name .*{problem}$"):
        read_coco(path, tmp_path, CLASSES)


def test_save_masks_stays_inside_its_folder(tmp_path):
    labels = np.zeros((4, 4), np.uint8)
    for name in ("../escape.jpg", "/tmp/escape.jpg"):
        with pytest.raises(DataError, match="not a relative path inside the data root"):
            save_label_png(tmp_path / "masks", name, labels)
    assert not (tmp_path / "escape.png").exists() and not Path("/tmp/escape.png").exists()


# --------------------------------------------------------------------- COCO values


@pytest.mark.parametrize("change, message", [
    (lambda d: d["images"][0].update(id=[7]), r"image #0 has id \[7\], expected an integer or a string"),
    (lambda d: d["images"][0].update(id={"a": 1}), r"image #0 has id \{\.\.\.\}, expected an integer or a string"),
    (lambda d: d["images"][0].update(id=7.0), r"image #0 has id 7\.0, expected an integer or a string"),
    (lambda d: d["annotations"][0].update(image_id=[7]), r"annotation 1 refers to image_id \[7\]"),
    (lambda d: d["annotations"][0].update(category_id={"id": 1}), r"annotation 1 has category_id \{\.\.\.\}"),
    (lambda d: d["annotations"][0].update(id=[1]), r"annotation #0 has id \[1\]"),
    (lambda d: d["categories"][0].update(id=[[1]]), r"category #0 has id \[\.\.\.\]"),
    (lambda d: d["categories"][1].update(id=1), r"category id 1 is listed twice"),
    (lambda d: d["categories"][0].update(name=["General trash"]), r"category 1 \['General trash'\] is not in task.classes"),
    (lambda d: d["images"][0].update(height="20"), r"image 7 has height '20', expected an integer in 1\.\.32767"),
    (lambda d: d["images"][0].update(width=0), r"image 7 has width 0, expected an integer"),
    (lambda d: d["images"][0].update(width=20.5), r"image 7 has width 20\.5, expected an integer"),
    (lambda d: d["images"][0].update(height=10 ** 9), r"image 7 has height 1000000000, expected an integer"),
    (lambda d: d["images"][0].update(height=True), r"image 7 has height True, expected an integer"),
    (lambda d: d["images"].append(dict(d["images"][0], id=8)), r"images 7 and 8 have the same file_name 'a\.jpg'"),
    (lambda d: d["annotations"][0].update(segmentation=[["2", "2", "12", "2", "12", "12"]]),
     r"annotation 1 \(image 7\): polygon coordinate '2' is not a number"),
    (lambda d: d["annotations"][0].update(segmentation=[[2, 2, 12, True, 12, 12]]),
     r"annotation 1 \(image 7\): polygon coordinate True is not a number"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": "!!!!~~~~"}),
     r"annotation 1 \(image 7\): RLE counts string holds '!' at 0, outside COCO's alphabet"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": "ab\u00e9c"}),
     r"annotation 1 \(image 7\): RLE counts string holds 'é' at 2"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": "4o"}),
     r"annotation 1 \(image 7\): RLE counts string ends in the middle of a count"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": "4@"}),
     r"annotation 1 \(image 7\): RLE counts string decodes to a negative count at 1"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": [10, -5, 395]}),
     r"annotation 1 \(image 7\): RLE count -5 is not a non-negative integer"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": [10.5, 389.5]}),
     r"annotation 1 \(image 7\): RLE count 10\.5 is not a non-negative integer"),
    (lambda d: d["annotations"][0].update(segmentation={"size": [20, 20], "counts": {"a": 1}}),
     r"annotation 1 \(image 7\): RLE counts \{\.\.\.\} are neither a string nor a list of integers"),
])
def test_malformed_coco_values_are_one_line_errors(tmp_path, change, message):
    data = one_image(tmp_path, [ann([SQUARE])])
    change(data)
    path = write_json(tmp_path / "bad.json", data)
    with pytest.raises(DataError, match=rf"^{path}: {message}") as error:
        read_coco(path, tmp_path, CLASSES)
    assert "\n" not in str(error.value)


def test_rle_counts_that_do_not_cover_the_image_are_skipped_not_left_uninitialized(tmp_path):
    """pycocotools decodes counts that cover less than the image into a mask whose end is whatever memory held:
    pixels got a class at random. Too few and too many counts are counted warnings; the object is skipped."""
    data = one_image(tmp_path, [
        ann({"size": [20, 20], "counts": [10, 5]}, 1),  # 15 of 400 pixels
        ann({"size": [20, 20], "counts": [300, 300, 300]}, 2),
        ann({"size": [20, 20], "counts": "0d1"}, 3),  # compressed: runs of 0 and 52 pixels
        ann({"size": [20, 20], "counts": [10, 5, 385]}, 4),  # exact: kept
        ann({"size": [20, 30], "counts": [10, 5, 585]}, 5),
    ])
    result = read_coco(write_json(tmp_path / "short.json", data), tmp_path, CLASSES)
    assert [w.split(": ", 1)[1] for w in result.warnings] == [
        "annotation 1 (image 7): RLE counts cover 15 pixels, the 20x20 image has 400, skipped",
        "annotation 2 (image 7): RLE counts cover 900 pixels, the 20x20 image has 400, skipped",
        "annotation 3 (image 7): RLE counts cover 52 pixels, the 20x20 image has 400, skipped",
        "annotation 5 (image 7): RLE size [20, 30] differs from the image's 20x20, skipped",
    ]
    labels = label_map(result.samples[0])
    assert [o.id for o in result.samples[0].objects] == [4]
    assert int((labels == 1).sum()) == 5 and int(labels.sum()) == 5  # column-major pixels 10..14 only


def test_rle_string_counts_decode_as_pycocotools_does():
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(0)
    for _ in range(50):
        mask = (rng.random((rng.integers(1, 40), rng.integers(1, 40))) < rng.random()).astype(np.uint8)
        counts = rle_string_counts(mask_utils.encode(np.asfortranarray(mask))["counts"].decode())
        flat = mask.reshape(-1, order="F").astype(int)
        runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1])))  # lengths of the runs of equal values
        expected = ([0] if flat[0] else []) + runs.tolist()  # COCO's first run is of zeros
        assert counts == expected and sum(counts) == mask.size


def test_deeply_nested_coco_json_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100000 + "]" * 100000 + "}")
    with pytest.raises(DataError, match=rf"^{path}: not a valid JSON file \(nested too deeply\)$"):
        read_coco(path, tmp_path, CLASSES)
    data = one_image(tmp_path, [ann([[json.loads("[" * 500 + "]" * 500), 2, 12, 2, 12, 12]])])
    with pytest.raises(DataError, match=r"annotation 1 \(image 7\): polygon coordinate \[\.\.\.\] is not a number"):
        read_coco(write_json(tmp_path / "nested.json", data), tmp_path, CLASSES)


# --------------------------------------------------------------------- hand-bone JSON


def test_hand_bone_json_nested_too_deeply_or_beyond_float_range(tmp_path):
    classes = list(HAND_BONE_CLASSES)
    deep = tmp_path / "deep.json"
    deep.write_text('{"annotations": [{"label": "finger-1", "points": ' + "[" * 100000 + "]" * 100000 + "}]}")
    with pytest.raises(DataError, match=rf"^{deep}: not a valid annotation JSON \(nested too deeply\)$"):
        read_polygons(deep, classes, 50, 50)
    nested = tmp_path / "nested.json"
    nested.write_text('{"annotations": [{"label": "finger-1", "points": ' + "[" * 900 + "1" + "]" * 900 + "}]}")
    with pytest.raises(DataError, match=rf"^{nested}: annotation 0 \(finger-1\) has malformed points$"):
        read_polygons(nested, classes, 50, 50)
    huge = tmp_path / "huge.json"
    huge.write_text('{"annotations": [{"label": "finger-1", "points": [[1, 2], [' + "9" * 400 + ', 3], [4, 5]]}, '
                    '{"label": "finger-2", "points": [[1, 1], [9, 1], [9, 9]]}]}')
    polygons, warnings = read_polygons(huge, classes, 50, 50)
    assert [c for c, _ in polygons] == [1]
    assert warnings == [f"{huge}: skipped annotation 0 (finger-1): a coordinate beyond float range"]


# --------------------------------------------------------------------- hard voting


def test_a_duplicated_row_in_a_hard_vote_is_one_line(tmp_path, capsys):
    row = "a.jpg," + " ".join(["1"] * SUBMISSION_SIZE ** 2)
    other = "b.jpg," + " ".join(["2"] * SUBMISSION_SIZE ** 2)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text(f"image_id,PredictionString\n{row}\n{other}\n")
    bad.write_text(f"image_id,PredictionString\n{row}\n{other}\n{row.replace(' 1', ' 3')}\n")
    err = cli_error(ensemble.main, ["--csvs", str(good), str(bad), str(good), "--config", TRASH,
                                    "--out", str(tmp_path / "vote.csv")], capsys)
    assert err == f"error: {bad}: line 4: image 'a.jpg' has a second row (line 2); a vote needs one per image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "good.csv"]


# --------------------------------------------------------------------- pseudo-label writes


def enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[-1]) if args else None)


def test_hand_bone_pseudo_labels_on_a_full_disk_or_read_only_parent(dataset_root, classes, tmp_path, monkeypatch):
    from tasks.handbone.reader import scan_split

    samples = scan_split(dataset_root, "test")[:2]
    confident = [(s, np.zeros((len(classes), 16, 16), np.float32)) for s in samples]
    out = tmp_path / "pseudo"
    with monkeypatch.context() as m:  # the PNG copy fills the disk
        m.setattr("tasks.handbone.pseudo.os.link", lambda *a: enospc(a[0], a[1]))
        m.setattr("tasks.handbone.pseudo.shutil.copy2", enospc)
        with pytest.raises(UserError, match=rf"^{out}/train/DCM/{samples[0].key}: cannot write \(No space left"):
            write_pseudo_labels(confident, out, classes, min_confidence=0.5)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "ro").mkdir()
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if ".tmp-" in self.name:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    with monkeypatch.context() as m:  # a read-only parent: the temporary folder cannot be made
        m.setattr(Path, "mkdir", read_only)
        with pytest.raises(UserError, match=rf"^{tmp_path / 'ro' / 'pseudo'}: cannot write \(Read-only file"):
            write_pseudo_labels(confident, tmp_path / "ro" / "pseudo", classes, min_confidence=0.5)
    assert list((tmp_path / "ro").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=rf"{tmp_path / 'file'} is a file, not a folder"):
        write_pseudo_labels(confident, tmp_path / "file" / "pseudo", classes, min_confidence=0.5)


def test_a_killed_pseudo_label_runs_folder_is_removed_by_the_rerun(dataset_root, classes, tmp_path):
    """pseudo_label.py killed mid-write leaves `pseudo.tmp-<pid>-<hex>`; the next run's writer removes it."""
    from tasks.handbone.reader import scan_split

    out = tmp_path / "pseudo"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path\n"
            "from utils.files import atomic_folder\n"
            f"with atomic_folder(Path({str(out)!r})) as tmp:\n"
            "    (tmp / 'train').mkdir(); print('ready', flush=True); time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
    finally:
        writer.kill()
        writer.wait()
    assert len(list(tmp_path.glob("pseudo.tmp-*"))) == 1
    samples = scan_split(dataset_root, "test")[:1]
    report = write_pseudo_labels([(s, np.zeros((len(classes), 16, 16), np.float32)) for s in samples], out, classes,
                                 min_confidence=0.5)
    assert report.written and sorted(p.name for p in tmp_path.iterdir()) == ["pseudo"]


def test_coco_pseudo_labels_on_a_full_disk_read_only_parent_or_file_in_the_way(tmp_path, monkeypatch):
    class Sample:
        key = "batch_01_vt/0001.jpg"

    predictions = [(Sample(), np.ones((8, 8), np.uint8), 0.9)]
    out = tmp_path / "sub" / "pseudo.json"
    for code in (errno.ENOSPC, errno.EROFS):
        with monkeypatch.context() as m:
            m.setattr("utils.files.Path.write_text", lambda self, *a, code=code, **k: (_ for _ in ()).throw(
                OSError(code, os.strerror(code), str(self))))
            with pytest.raises(UserError, match=rf"^{out}: cannot write \({os.strerror(code)}\)$"):
                write_pseudo_coco(predictions, out, CLASSES, 0.5, {})
        assert list((tmp_path / "sub").iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match=rf"^{tmp_path / 'file'}: exists and is not a folder$"):
        write_pseudo_coco(predictions, tmp_path / "file" / "pseudo.json", CLASSES, 0.5, {})


# --------------------------------------------------------------------- the test set and --save-masks, end to end


@pytest.fixture(scope="module")
def trash_run(tmp_path_factory):
    """A tiny trash dataset (3 test images at 64 px) and a one-epoch checkpoint trained on it."""
    tmp = tmp_path_factory.mktemp("trash_hostile")
    root = generate(tmp / "ds", train=8, test=3, size=64, seed=4, progress=False)
    cfg = load_config(TRASH, [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", "data.synthetic=null",
                              "data.image_size=32", "data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0",
                              "data.cache_workers=1", "model.params={encoder_depth: 3, decoder_channels: [16, 8, 8]}",
                              "trainer.epochs=1", "transforms.gpu=[]"])
    Trainer(cfg, tmp / "run", setup_runtime(cfg.trainer), progress=False).fit()
    return root, tmp / "run" / "best.pt"


@pytest.fixture
def trash_copy(trash_run, tmp_path):
    return Path(shutil.copytree(trash_run[0], tmp_path / "ds")), trash_run[1]


def infer(root, checkpoint, out, *extra) -> list[str]:
    return ["--checkpoint", str(checkpoint), "--data", str(root), "--out", str(out), "--workers", "0",
            "--no-progress", *map(str, extra)]


def edit_test_json(root: Path, change) -> None:
    data = json.loads((root / "test.json").read_text())
    change(data["images"])
    (root / "test.json").write_text(json.dumps(data))


def test_test_images_with_one_file_name_or_another_size_stop_before_the_model_loads(trash_copy, tmp_path, capsys,
                                                                                     monkeypatch):
    root, checkpoint = trash_copy
    monkeypatch.setattr("trainer.inference.load_member", lambda *a, **k: pytest.fail("the model was loaded"))
    out = tmp_path / "sub.csv"
    names = [im["file_name"] for im in json.loads((root / "test.json").read_text())["images"]]
    edit_test_json(root, lambda images: images[2].update(file_name=images[0]["file_name"]))
    err = cli_error(inference.main, infer(root, checkpoint, out), capsys)
    ids = [im["id"] for im in json.loads((root / "test.json").read_text())["images"]]
    assert err == (f"error: {root / 'test.json'}: images {ids[0]} and {ids[2]} have the same file_name "
                   f"{names[0]!r}")
    edit_test_json(root, lambda images: images[2].update(file_name="../escape.jpg"))
    err = cli_error(inference.main, infer(root, checkpoint, out), capsys)
    assert err.endswith("file_name '../escape.jpg', which is not a relative path inside the data root")
    edit_test_json(root, lambda images: images[2].update(file_name=names[2]))
    cv2.imwrite(str(root / names[1]), np.zeros((40, 30, 3), np.uint8))
    err = cli_error(inference.main, infer(root, checkpoint, out), capsys)
    assert err == f"error: {root / names[1]}: is 30x40, its JSON says 64x64 (image {ids[1]})"
    assert not out.exists()


def test_save_masks_refuses_a_used_folder_and_a_failed_write_leaves_nothing(trash_run, tmp_path, capsys,
                                                                            monkeypatch):
    root, checkpoint = trash_run
    out, masks = tmp_path / "sub.csv", tmp_path / "masks"
    masks.mkdir()
    (masks / "old.png").write_bytes(b"x")
    err = cli_error(inference.main, infer(root, checkpoint, out, "--save-masks", masks), capsys)
    assert err == f"error: --save-masks {masks}: output folder exists and is not empty; give a new folder or remove it"
    (tmp_path / "file").write_text("x")
    err = cli_error(inference.main, infer(root, checkpoint, out, "--save-masks", tmp_path / "file" / "m"), capsys)
    assert err == f"error: --save-masks {tmp_path / 'file' / 'm'}: {tmp_path / 'file'} is a file, not a folder"

    shutil.rmtree(masks)
    first = json.loads((root / "test.json").read_text())["images"][0]["file_name"]
    real_replace = os.replace

    def full_disk(src, dst):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr("utils.files.os.replace", full_disk)
    err = cli_error(inference.main, infer(root, checkpoint, out, "--save-masks", masks), capsys)
    assert err == f"error: {masks / Path(first).with_suffix('.png')}: cannot write (No space left on device)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # no CSV, no masks, no temporaries


def test_labels_of_the_csv_equal_the_saved_masks_resized(trash_run, tmp_path):
    """Without --save-masks only the 256x256 pixels the CSV samples are computed: the same rows as with it."""
    root, checkpoint = trash_run
    with pytest.raises(SystemExit) as done:
        run_main(lambda: inference.main(infer(root, checkpoint, tmp_path / "a.csv")))
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        run_main(lambda: inference.main(infer(root, checkpoint, tmp_path / "b.csv", "--save-masks", tmp_path / "m")))
    assert done.value.code == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    pngs = sorted((tmp_path / "m").rglob("*.png"))
    assert len(pngs) == 3 and all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (64, 64) for p in pngs)


def test_pseudo_label_out_under_a_file_stops_before_the_model_loads(trash_run, tmp_path, capsys):
    root, checkpoint = trash_run
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "pseudo.json"
    err = cli_error(pseudo_label.main, ["--checkpoints", str(checkpoint), "--data", str(root), "--out", str(out),
                                        "--workers", "0", "--no-progress"], capsys)
    assert err == f"error: --out {out}: {tmp_path / 'file'} is a file, not a folder"
