"""tasks.handbone.submission: CSV layout, atomic writes, strict reading, validation, hard voting."""
import cv2
import numpy as np
import pytest

from tasks.handbone.submission import (
    SubmissionWriter,
    hard_vote,
    read_png_size,
    read_submission,
    read_test_image_sizes,
    validate_submission,
)
from utils.errors import DataError, UserError
from utils.rle import decode_rle, encode_rle

CLASSES = ["a", "b", "c"]


def write_csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def make_test_root(root, images):
    """ROOT/test/DCM/<rel> PNGs of the given {rel: (height, width)}."""
    for rel, (h, w) in images.items():
        p = root / "test" / "DCM" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(p), np.zeros((h, w), np.uint8))
    return root


def test_layout_exact(tmp_path):
    out = tmp_path / "sub.csv"
    with SubmissionWriter(out, CLASSES) as w:
        w.write_image("img1.png", ["1 2", "", "3 1"])
        w.write_image("img0.png", ["", "", ""])
    assert out.read_text() == (
        "image_name,class,rle\n"
        "img1.png,a,1 2\n"
        "img1.png,b,\n"
        "img1.png,c,3 1\n"
        "img0.png,a,\n"
        "img0.png,b,\n"
        "img0.png,c,\n")
    assert list(tmp_path.iterdir()) == [out]              # no temporary file left behind
    assert read_submission(out, CLASSES) == {"img1.png": ["1 2", "", "3 1"], "img0.png": ["", "", ""]}


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "sub.csv"
    with pytest.raises(RuntimeError, match="boom"), SubmissionWriter(out, CLASSES) as w:
        w.write_image("img1.png", ["1 2", "", ""])
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_previous_file_on_error(tmp_path):
    out = write_csv(tmp_path / "sub.csv", "old")
    with pytest.raises(ValueError, match="2 RLE strings for 3 classes"), SubmissionWriter(out, CLASSES) as w:
        w.write_image("img1.png", ["1 2", ""])
    assert out.read_text() == "old"
    assert list(tmp_path.iterdir()) == [out]


def test_writer_rejects_duplicate_image(tmp_path):
    with pytest.raises(ValueError, match="written twice"), SubmissionWriter(tmp_path / "s.csv", CLASSES) as w:
        w.write_image("x.png", ["", "", ""])
        w.write_image("x.png", ["", "", ""])
    assert list(tmp_path.iterdir()) == []


HEADER = "image_name,class,rle\n"


@pytest.mark.parametrize("body,match", [
    ("", "empty file"),
    ("name,class,rle\n", "header"),
    (HEADER + "x.png,a,\nx.png,b,\n", "missing rows for class\\(es\\) c"),
    (HEADER + "x.png,a,\nx.png,c,\nx.png,b,\n", "out of order"),
    (HEADER + "x.png,a,\nx.png,a,\nx.png,b,\nx.png,c,\n", "duplicate row"),
    (HEADER + "x.png,a,\nx.png,b,\nx.png,c,\ny.png,a,\ny.png,b,\ny.png,c,\nx.png,a,\n", "appears again"),
    (HEADER + "x.png,a,\nx.png,zz,\nx.png,c,\n", "unknown class 'zz'"),
    (HEADER + "x.png,a\n", "2 fields, expected 3"),
])
def test_read_problems(tmp_path, body, match):
    path = write_csv(tmp_path / "s.csv", body)
    with pytest.raises(DataError, match=match) as e:
        read_submission(path, CLASSES)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_read_rejects_non_csv(tmp_path):
    path = tmp_path / "s.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    with pytest.raises(DataError, match="not a UTF-8 text CSV"):
        read_submission(path, CLASSES)
    with pytest.raises(DataError, match="not found"):
        read_submission(tmp_path / "missing.csv", CLASSES)


def test_read_long_rle_field(tmp_path):
    rle = " ".join(f"{2 * i + 1} 1" for i in range(40000))          # > csv's 128 KiB default
    path = tmp_path / "s.csv"
    with SubmissionWriter(path, ["a"]) as w:
        w.write_image("x.png", [rle])
    assert read_submission(path, ["a"]) == {"x.png": [rle]}


def test_read_png_size(tmp_path):
    make_test_root(tmp_path, {"ID001/x.png": (7, 11)})
    assert read_png_size(tmp_path / "test/DCM/ID001/x.png") == (7, 11)
    bad = write_csv(tmp_path / "bad.png", "not a png at all, no")
    with pytest.raises(DataError, match="not a PNG"):
        read_png_size(bad)


@pytest.fixture
def test_root(tmp_path):
    # ID010 sorts after ID002 as a path; image names chosen so that name order differs
    return make_test_root(tmp_path / "data", {"ID002/z.png": (4, 5), "ID010/a.png": (6, 3)})


def write_good(path):
    with SubmissionWriter(path, CLASSES) as w:
        w.write_image("z.png", ["1 20", "", "3 2"])
        w.write_image("a.png", ["", "18 1", ""])
    return path


def test_validate_ok(test_root, tmp_path):
    path = write_good(tmp_path / "s.csv")
    assert validate_submission(path, test_root, CLASSES) == []
    assert any("unknown class 'a'" in p for p in validate_submission(path, test_root, ["x", "y", "z"]))


def test_validate_finds_problems(test_root, tmp_path):
    missing = write_csv(tmp_path / "m.csv", HEADER + "z.png,a,\nz.png,b,\nz.png,c,\na.png,a,\na.png,b,\n")
    problems = validate_submission(missing, test_root, CLASSES)
    assert any("missing rows for class(es) c" in p for p in problems)
    assert any("5 rows, expected 6 (2 images x 3 classes)" in p for p in problems)

    order = tmp_path / "o.csv"
    with SubmissionWriter(order, CLASSES) as w:
        w.write_image("a.png", ["", "", ""])
        w.write_image("z.png", ["", "", ""])
    problems = validate_submission(order, test_root, CLASSES)
    assert problems == [f"{order}: images are not in sorted test/DCM path order: "
                        f"image #1 is 'a.png', expected 'z.png'"]

    bounds = tmp_path / "b.csv"
    with SubmissionWriter(bounds, CLASSES) as w:
        w.write_image("z.png", ["1 21", "", ""])             # 4x5 image: 20 pixels
        w.write_image("a.png", ["", "5 1 2 1", "x"])
    problems = validate_submission(bounds, test_root, CLASSES)
    assert len(problems) == 3
    assert "image 'z.png', class 'a': RLE run 1 (start 1, length 21) ends past the 4x5 mask" in problems[0]
    assert "class 'b'" in problems[1] and "sorted" in problems[1]
    assert "class 'c'" in problems[2] and "not a non-negative integer" in problems[2]

    names = tmp_path / "n.csv"
    with SubmissionWriter(names, CLASSES) as w:
        w.write_image("z.png", ["", "", ""])
        w.write_image("q.png", ["", "", ""])
    problems = validate_submission(names, test_root, CLASSES)
    assert any("1 image(s) not in" in p and "q.png" in p for p in problems)
    assert any("1 test image(s) have no rows: a.png" in p for p in problems)


def test_validate_missing_test_folder(tmp_path):
    path = write_good(tmp_path / "s.csv")
    with pytest.raises(DataError, match="test image folder not found"):
        validate_submission(path, tmp_path / "nowhere", CLASSES)


def test_image_sizes_in_submission_order(test_root):
    assert list(read_test_image_sizes(test_root).items()) == [("z.png", (4, 5)), ("a.png", (6, 3))]


def test_hard_vote_majority(tmp_path):
    sizes = {"p.png": (3, 4), "q.png": (2, 2)}
    rng = np.random.default_rng(0)
    votes = {name: [rng.random((3, *shape)) < 0.5 for _ in CLASSES] for name, shape in sizes.items()}
    votes["p.png"][0][:] = False
    votes["p.png"][0][:, 0, 1] = [True, True, False]            # 2 of 3 -> kept
    votes["p.png"][0][:, 2, 3] = [True, False, False]           # 1 of 3 -> dropped
    paths = []
    for k in range(3):
        path = tmp_path / f"in{k}.csv"
        with SubmissionWriter(path, CLASSES) as w:
            for name in sizes:
                w.write_image(name, [encode_rle(votes[name][c][k]) for c in range(len(CLASSES))])
        paths.append(path)
    out = tmp_path / "vote.csv"
    hard_vote(paths, 2, out, CLASSES, sizes)
    got = read_submission(out, CLASSES)
    assert list(got) == ["p.png", "q.png"]
    for name, (h, w) in sizes.items():
        for c in range(len(CLASSES)):
            majority = np.sum(votes[name][c], axis=0) >= 2
            assert got[name][c] == encode_rle(majority)
            np.testing.assert_array_equal(decode_rle(got[name][c], h, w), majority)
    assert got["p.png"][0] == "2 1"

    hard_vote(paths, 1, out, CLASSES, sizes)                    # union
    union = read_submission(out, CLASSES)
    assert union["q.png"][1] == encode_rle(np.any(votes["q.png"][1], axis=0))


def test_hard_vote_matches_pixel_vote_on_random_runs(tmp_path):
    rng = np.random.default_rng(5)
    sizes = {"r.png": (37, 29)}
    masks = [rng.random((37, 29)) < p for p in (0.2, 0.5, 0.7, 0.9)]
    paths = []
    for k, m in enumerate(masks):
        path = tmp_path / f"in{k}.csv"
        with SubmissionWriter(path, ["a"]) as w:
            w.write_image("r.png", [encode_rle(m)])
        paths.append(path)
    for min_votes in range(1, 5):
        hard_vote(paths, min_votes, tmp_path / "v.csv", ["a"], sizes)
        want = encode_rle(np.sum(masks, axis=0) >= min_votes)
        assert read_submission(tmp_path / "v.csv", ["a"]) == {"r.png": [want]}


def test_hard_vote_input_checks(tmp_path):
    sizes = {"p.png": (2, 2), "q.png": (2, 2)}
    a = tmp_path / "a.csv"
    b = tmp_path / "b.csv"
    with SubmissionWriter(a, CLASSES) as w:
        w.write_image("p.png", ["", "", ""])
        w.write_image("q.png", ["", "", ""])
    with SubmissionWriter(b, CLASSES) as w:
        w.write_image("q.png", ["", "", ""])
        w.write_image("p.png", ["", "", ""])
    with pytest.raises(DataError, match=f"^{b}: image #1 is 'q.png' but {a} has 'p.png'"):
        hard_vote([a, b], 1, tmp_path / "o.csv", CLASSES, sizes)
    other = tmp_path / "c.csv"
    with SubmissionWriter(other, ["a", "b", "x"]) as w:
        w.write_image("p.png", ["", "", ""])
    with pytest.raises(DataError, match=f"^{other}: .*unknown class 'x'"):
        hard_vote([a, other], 1, tmp_path / "o.csv", CLASSES, sizes)
    bad = write_csv(tmp_path / "d.csv", HEADER + "p.png,a,1 5\np.png,b,\np.png,c,\n"
                    "q.png,a,\nq.png,b,\nq.png,c,\n")
    with pytest.raises(DataError, match=f"^{bad}: image 'p.png', class 'a': .*ends past"):
        hard_vote([a, bad], 1, tmp_path / "o.csv", CLASSES, sizes)
    with pytest.raises(UserError, match="min_votes"):
        hard_vote([a, a], 3, tmp_path / "o.csv", CLASSES, sizes)
    assert not (tmp_path / "o.csv").exists()
