"""A cache that heals itself and survives many simultaneous builders; full disks while writing the cache and the
submission CSV end in one line with nothing half-written left."""
import errno
import multiprocessing
import os
import subprocess

import numpy as np
import pytest

from data import cache as cache_module
from data.cache import open_cache
from tasks.handbone.layout import HandboneLayout
from tasks.handbone.reader import scan_split
from tasks.handbone.submission import SubmissionWriter
from tests.system import unavailable
from utils.config import TaskConfig
from utils.errors import UserError
from utils.images import read_gray, resize_image


def samples_of(root, n=3):
    return scan_split(root, "train")[:n]


def assert_cache_matches(cache, samples):
    for i, sample in enumerate(samples):
        assert np.array_equal(cache.image(i), resize_image(read_gray(sample.image), 64))


@pytest.mark.parametrize("damage", ["truncate_images", "delete_index", "edit_index", "delete_masks"])
def test_damaged_cache_is_rebuilt_with_a_warning(damage, dataset_root, classes, tmp_path, capsys):
    samples = samples_of(dataset_root)
    cache = open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    folder = cache.folder
    del cache
    if damage == "truncate_images":
        with open(folder / "images.u8", "r+b") as f:
            f.truncate(100)
    elif damage == "delete_index":
        (folder / "index.json").unlink()
    elif damage == "edit_index":
        (folder / "index.json").write_text((folder / "index.json").read_text().replace('"height": 64', '"height": 63'))
    else:
        (folder / "masks.bits").unlink()
    capsys.readouterr()
    healed = open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert healed.folder == folder
    err = capsys.readouterr().err
    assert f"warning: {folder}: damaged cache (" in err and "rebuilding it" in err
    assert_cache_matches(healed, samples)


def test_stale_temporary_folders_are_removed(dataset_root, classes, tmp_path):
    samples = samples_of(dataset_root)
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    killed = cache_dir / "64-3-0123456789abcdef.tmp-x1"  # another cache's build, killed
    killed.mkdir()
    (killed / "images.u8").write_bytes(b"\0" * 10)
    cache = open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, cache_dir, workers=1, progress=False)
    own_killed = cache_dir / f"{cache.folder.name}.tmp-x2"
    own_killed.mkdir()
    (cache.folder / "index.json").unlink()  # force a rebuild, which cleans up
    open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, cache_dir, workers=1, progress=False)
    assert not killed.exists() and not own_killed.exists()


def _open_in_child(samples, classes, cache_dir, marker, barrier, results):
    """Count builds by appending to `marker` (O_APPEND: atomic for short writes), then open at the same instant."""
    build = cache_module._build

    def counting_build(*args, **kwargs):
        with open(marker, "a") as f:
            f.write("x")
        return build(*args, **kwargs)

    cache_module._build = counting_build
    barrier.wait()
    try:
        cache = open_cache(samples, HandboneLayout(TaskConfig(classes=classes)), 64, cache_dir, workers=1, progress=False)
        results.put(("ok", cache.folder.name, int(cache.image(0).sum())))
    except BaseException as e:  # reported to the test, not swallowed
        results.put(("error", f"{type(e).__name__}: {e}", 0))


def test_twenty_processes_open_one_new_cache(dataset_root, classes, tmp_path):
    samples = samples_of(dataset_root, 2)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(20), ctx.Queue()
    marker = tmp_path / "builds"
    procs = [ctx.Process(target=_open_in_child, args=(samples, classes, tmp_path / "c", marker, barrier, results))
             for _ in range(20)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [o[0] for o in outcomes] == ["ok"] * 20, [o for o in outcomes if o[0] != "ok"]
    assert len({o[1:] for o in outcomes}) == 1 and all(p.exitcode == 0 for p in procs)
    assert marker.read_text() == "x", "exactly one process built the cache"
    assert not list((tmp_path / "c").glob("*.tmp-*"))


class _FullDiskFile:
    """A binary file whose writes fail with ENOSPC after `room` bytes, as on a full disk."""

    def __init__(self, path, mode, room=1000):
        self.file = open(path, mode)  # noqa: SIM115  (closed by __exit__)
        self.room = room

    def write(self, data):
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.file.write(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_cache_full_disk_fault_injection(dataset_root, classes, tmp_path, monkeypatch):
    def fake_open(path, mode="r", *args, **kwargs):
        return _FullDiskFile(path, mode) if mode == "wb" else open(path, mode, *args, **kwargs)

    monkeypatch.setattr(cache_module, "open", fake_open, raising=False)
    with pytest.raises(UserError, match=r"cannot write the cache \(No space left on device\)$"):
        open_cache(samples_of(dataset_root), HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert [p.suffix for p in (tmp_path / "c").iterdir()] == [".lock"]  # no half-built folder


def mount_tmpfs(folder, size):
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root with mount permission")
    return folder


def test_cache_and_csv_on_a_real_full_disk(dataset_root, classes, tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "64k")
    try:
        with pytest.raises(UserError, match=rf"{disk}/.*: cannot write the cache \(No space left on device\)"):
            open_cache(scan_split(dataset_root, "train"), HandboneLayout(TaskConfig(classes=classes)), None, disk / "c", workers=1, progress=False)
        assert not list((disk / "c").glob("*.tmp-*"))
        out = disk / "sub.csv"
        with (pytest.raises(UserError, match=rf"^{out}: cannot write \(No space left on device\)$"),
              SubmissionWriter(out, classes) as writer):
            for i in range(2000):
                writer.write_image(f"image{i}.png", ["1 100000"] * len(classes))
        assert sorted(os.listdir(disk)) == ["c"]  # neither the CSV nor its temporary file
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_csv_full_disk_fault_injection(classes, tmp_path, monkeypatch):
    import tasks.handbone.submission as submission

    class FullWriter:
        def writerow(self, row):
            pass

        def writerows(self, rows):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(submission.csv, "writer", lambda *a, **k: FullWriter())
    out = tmp_path / "sub.csv"
    with (pytest.raises(UserError, match=rf"^{out}: cannot write \(No space left on device\)$"),
          SubmissionWriter(out, classes) as writer):
        writer.write_image("a.png", [""] * len(classes))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------- polygons, test list


def _annotations(path, edit):
    import json

    data = json.loads(path.read_text())
    edit(data["annotations"])
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("edit, expected", [
    (lambda a: a[0]["points"].__setitem__(1, [float("nan"), 3]), "skipped annotation 0 (finger-1): NaN or infinite coordinates"),
    (lambda a: a[0]["points"].__setitem__(1, [1e300, 3]), "skipped annotation 0 (finger-1): NaN or infinite coordinates"),
    (lambda a: a.__setitem__(0, "finger-1"), "skipped annotation 0: not an object (str)"),
    (lambda a: a[0].__setitem__("label", 7), "skipped annotation 0: label 7 is not a string"),
    (lambda a: a.append(dict(a[1])), "skipped annotation 29 (finger-2): the bone is already annotated by annotation 1"),
])
def test_bad_polygons_are_named_skipped_and_counted(edit, expected, dataset_copy, classes, tmp_path):
    from tasks.handbone.reader import read_polygons

    sample = scan_split(dataset_copy, "train")[0]
    _annotations(sample.annotation, edit)
    polygons, warnings = read_polygons(sample.annotation, classes, 128, 128)
    assert len(polygons) == 28 + ("already annotated" in expected) and warnings == [f"{sample.annotation}: {expected}"]
    cache = open_cache(scan_split(dataset_copy, "train"), HandboneLayout(TaskConfig(classes=classes)), 64, tmp_path / "c", workers=1, progress=False)
    assert len(cache.warnings) == 1


def test_annotations_not_a_list_is_an_error(dataset_copy, classes):
    import json

    from tasks.handbone.reader import read_polygons
    from utils.errors import DataError

    sample = scan_split(dataset_copy, "train")[0]
    sample.annotation.write_text(json.dumps({"annotations": {"label": "finger-1"}}))
    with pytest.raises(DataError, match=f"{sample.annotation}: 'annotations' must be a list of objects, got dict"):
        read_polygons(sample.annotation, classes, 128, 128)


def test_one_test_list_for_inference_check_and_voting(dataset_copy, capsys):
    """Images outside test/DCM/IDxxx/ are named and skipped by every entry point alike."""
    from tasks.handbone.submission import list_test_images, read_test_image_sizes

    dcm = dataset_copy / "test" / "DCM"
    first = scan_split(dataset_copy, "test")[0].image
    (dcm / "loose.png").write_bytes(first.read_bytes())
    (dcm / first.parent.name / "deeper").mkdir()
    (dcm / first.parent.name / "deeper" / "x.png").write_bytes(first.read_bytes())
    keys = [s.key for s in scan_split(dataset_copy, "test")]
    assert list_test_images(dataset_copy) == keys and "loose.png" not in keys
    assert list(read_test_image_sizes(dataset_copy)) == [k.split("/")[-1] for k in keys]
    err = capsys.readouterr().err
    assert f"warning: {dcm}: skipped 2 file(s)" in err and "loose.png" in err and "deeper/x.png" in err


def test_duplicate_test_file_names_refused_before_prediction(tiny_checkpoint, dataset_copy, tmp_path):
    import inference
    from utils.errors import DataError

    samples = scan_split(dataset_copy, "test")
    other = next(s for s in samples if s.group != samples[0].group)
    (other.image.parent / samples[0].image.name).write_bytes(samples[0].image.read_bytes())
    with pytest.raises(DataError, match="two test images share the file name"):
        inference.main(["--checkpoint", str(tiny_checkpoint), "--data", str(dataset_copy),
                        "--out", str(tmp_path / "s.csv")])


def test_bad_test_image_in_a_loader_worker_is_one_line(tiny_checkpoint, dataset_copy, tmp_path):
    import inference
    from utils.cli import one_line

    broken = scan_split(dataset_copy, "test")[1].image
    broken.write_bytes(b"garbage")
    with pytest.raises(UserError) as error:
        inference.main(["--checkpoint", str(tiny_checkpoint), "--data", str(dataset_copy), "--workers", "1",
                        "--out", str(tmp_path / "s.csv"), "--no-progress"])
    assert one_line(error.value) == f"{broken}: missing or unreadable image"
    assert list(tmp_path.iterdir()) == [tmp_path / "hands"]
