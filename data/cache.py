"""Decode and rasterize every image once per resolution into memory-mapped arrays; epochs read from them.

Decoding a 2048x2048 PNG and filling 29 polygons costs about a second of CPU per image, which starves a GPU by
~10x when done every epoch. The cache stores uint8 images and masks bit-packed along the width (so crops at
multiples of 8 pixels read only the bytes they need), in one flat file each with per-sample offsets (original
sizes may differ). The cache folder name hashes the sources (paths, sizes, mtimes), the classes and the size:
any change builds a new one. A folder is built under a temporary name and renamed when complete.

The cache heals itself: index.json records each data file's size and a checksum of the index, and opening checks
them, so a truncated or half-deleted cache is rebuilt (with a warning naming it) instead of failing every later
run. Builders of one cache take a lock file (fcntl), so many processes opening a new cache at once build it once;
temporary folders left by killed builds are removed when their lock is free.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from utils.errors import UserError
from utils.files import os_reason

CACHE_VERSION = 2  # 2: index.json records file sizes and its own checksum
DATA_FILES = ("images.u8", "masks.bits")


class CacheDamaged(Exception):
    """A cache folder that cannot be trusted (the message says why); open_cache rebuilds it."""


@dataclass
class _Entry:
    height: int
    width: int
    orig_height: int
    orig_width: int
    image_offset: int
    mask_offset: int


class SampleCache:
    """Read access to a built cache: `image(i)` (H, W) or (H, W, 3) and, by the format's label kind,
    `mask_bits(i)` (C, H, ceil(W/8)) or `labels(i)` (H, W), all uint8 views."""

    def __init__(self, folder: Path):
        self.folder = folder
        index = read_index(folder)
        self.keys: list[str] = index["keys"]
        self.groups: list[str] = index["groups"]
        self.classes: list[str] = index["classes"]
        self.warnings: list[str] = index["warnings"]
        self.entries = [_Entry(**e) for e in index["entries"]]
        self.label_kind: str = index.get("label_kind", "bits")  # "bits": one plane per class; "map": label map
        self.channels: int = index.get("channels", 1)
        self._images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r")
        self._masks = np.memmap(folder / "masks.bits", dtype=np.uint8, mode="r") if index["has_masks"] else None

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, i: int) -> np.ndarray:
        e = self.entries[i]
        shape = (e.height, e.width) if self.channels == 1 else (e.height, e.width, self.channels)
        return self._images[e.image_offset:e.image_offset + int(np.prod(shape))].reshape(shape)

    def labels(self, i: int) -> np.ndarray:
        """The (H, W) label map of a multiclass cache."""
        e = self.entries[i]
        return self._masks[e.mask_offset:e.mask_offset + e.height * e.width].reshape(e.height, e.width)

    def class_presence(self) -> np.ndarray:
        """(N, C) 0/1: which classes each sample holds (for oversampling and copy-paste donors); void labels (any
        value past the classes, e.g. 255) count for no class."""
        n = len(self.classes)
        if self.label_kind == "map":
            return np.stack([np.bincount(self.labels(i).reshape(-1), minlength=n)[:n] > 0
                             for i in range(len(self))]).astype(np.uint8)
        return np.stack([self.mask_bits(i).reshape(n, -1).any(1) for i in range(len(self))]).astype(np.uint8)

    def mask_bits(self, i: int) -> np.ndarray:
        e = self.entries[i]
        row = (e.width + 7) // 8
        n = len(self.classes) * e.height * row
        return self._masks[e.mask_offset:e.mask_offset + n].reshape(len(self.classes), e.height, row)

    def mask(self, i: int) -> np.ndarray:
        """Unpacked (C, H, W) uint8 0/1 mask."""
        return np.unpackbits(self.mask_bits(i), axis=2, count=self.entries[i].width)

    def original_size(self, i: int) -> tuple[int, int]:
        e = self.entries[i]
        return e.orig_height, e.orig_width

    def __getstate__(self):
        # DataLoader workers re-open the memmaps instead of pickling their pages
        return {"folder": self.folder}

    def __setstate__(self, state):
        self.__init__(state["folder"])


def cache_key(samples: list, classes: list[str], size: int | None, layout_id: str = "handbone") -> str:
    """A hash of everything the cache content depends on."""
    files = []
    for s in samples:
        # an annotation may be several files (a tuple: one mask per class); each is a source
        paths = (s.image, *s.annotation) if isinstance(s.annotation, tuple) else (s.image, s.annotation)
        for path in paths:
            if path is not None:
                st = path.stat()
                files.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    content = {"version": CACHE_VERSION, "classes": classes, "size": size, "files": files}
    if layout_id != "handbone":  # keeps the hand-bone keys of earlier versions
        content["format"] = layout_id
    payload = json.dumps(content)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def _checksum(index: dict) -> str:
    body = {k: v for k, v in index.items() if k != "checksum"}
    return hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_index(folder: Path) -> dict:
    """The verified index of a built cache; CacheDamaged names what is wrong (missing, truncated, edited)."""
    try:
        index = json.loads((folder / "index.json").read_text())
    except FileNotFoundError:
        raise CacheDamaged("index.json is missing") from None
    except (OSError, ValueError) as e:
        raise CacheDamaged(f"index.json is unreadable ({e})") from None
    if not isinstance(index, dict) or index.get("version") != CACHE_VERSION:
        raise CacheDamaged(f"index.json is not of cache version {CACHE_VERSION}")
    if index.get("checksum") != _checksum(index):
        raise CacheDamaged("index.json does not match its checksum")
    sizes = index.get("file_sizes")
    if not isinstance(sizes, dict):
        raise CacheDamaged("index.json records no file sizes")
    for name, expected in sizes.items():
        try:
            actual = (folder / name).stat().st_size
        except OSError:
            raise CacheDamaged(f"{name} is missing") from None
        if actual != expected:
            raise CacheDamaged(f"{name} has {actual} bytes, the index records {expected}")
    return index


def open_cache(samples: list, layout, size: int | None, cache_dir: str | Path, workers: int = 0,
               progress: bool = True) -> SampleCache:
    """Return the cache for these samples at `size` (None = original size), building it if missing or stale,
    and rebuilding it (with a warning) if damaged. Safe for many processes at once: one builds, the others wait.
    `layout` (the task's, tasks/) reads and rasterizes each sample and names its classes."""
    cache_dir = Path(cache_dir)
    label = "orig" if size is None else str(size)
    classes = layout.classes
    folder = cache_dir / f"{label}-{len(samples)}-{cache_key(samples, classes, size, layout.cache_id)}"
    with contextlib.suppress(CacheDamaged):
        return SampleCache(folder)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{cache_dir}: cannot create the cache folder ({os_reason(e)})") from None
    with _build_lock(folder):
        try:
            return SampleCache(folder)  # another process built it while this one waited for the lock
        except CacheDamaged as e:
            if folder.exists():
                print(f"warning: {folder}: damaged cache ({e}); rebuilding it", file=sys.stderr)
                try:
                    shutil.rmtree(folder)
                except OSError as error:
                    raise UserError(f"{folder}: cannot remove the damaged cache ({os_reason(error)}); "
                                    f"delete it by hand") from None
        _remove_stale_temps(cache_dir, folder)
        _build(samples, classes, size, folder, workers or os.cpu_count() or 1, progress, layout)
    return SampleCache(folder)


@contextlib.contextmanager
def _build_lock(folder: Path, blocking: bool = True):
    """An exclusive flock on `<folder>.lock`, held while the cache is checked and built; yields False when
    `blocking` is off and another process holds it. The lock file stays (removing it would race)."""
    lock = folder.with_name(folder.name + ".lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115  (closed by the with below; opening it may fail on its own)
    except OSError as e:
        raise UserError(f"{lock}: cannot create the cache lock file ({os_reason(e)})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_temps(cache_dir: Path, own: Path) -> None:
    """Temporary folders of killed builds: those of `own` (whose lock this process holds) and those of any other
    cache whose lock is free (no process is building it)."""
    for tmp in cache_dir.glob("*.tmp-*"):
        folder = cache_dir / tmp.name.split(".tmp-")[0]
        if folder == own:
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        with _build_lock(folder, blocking=False) as free:
            if free:
                shutil.rmtree(tmp, ignore_errors=True)


def _process(args) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int], list[str]]:
    """Decode, resize and rasterize one sample by its layout (runs in a worker process)."""
    layout, sample, size = args
    return layout.process(sample, size)


def _build(samples, classes, size, folder: Path, workers: int, progress: bool, layout) -> None:
    """Build into a temporary folder and rename it (called with the cache's lock held). A full disk is a one-line
    error naming the file, with the temporary folder removed."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    except OSError as e:
        raise UserError(f"{folder.parent}: cannot write the cache ({os_reason(e)})") from None
    has_masks = samples[0].annotation is not None
    try:
        start = time.time()
        jobs = [(layout, s, size) for s in samples]
        entries, warnings = [], []
        image_offset = mask_offset = 0
        with open(tmp / "images.u8", "wb") as images_f, open(tmp / "masks.bits", "wb") as masks_f:
            pool = get_context().Pool(workers) if workers > 1 and len(jobs) > 1 else None
            try:
                results = pool.imap(_process, jobs, chunksize=1) if pool else map(_process, jobs)
                bar = tqdm(results, total=len(jobs), desc=f"cache {folder.name}", disable=not progress,
                           unit="img", leave=False)
                for image, bits, orig_hw, sample_warnings in bar:
                    images_f.write(image.tobytes())
                    if bits is not None:
                        masks_f.write(bits.tobytes())
                    entries.append(dict(height=image.shape[0], width=image.shape[1], orig_height=orig_hw[0],
                                        orig_width=orig_hw[1], image_offset=image_offset, mask_offset=mask_offset))
                    image_offset += image.size
                    mask_offset += 0 if bits is None else bits.size
                    warnings.extend(sample_warnings)
            finally:
                if pool:
                    pool.close()
                    pool.join()
        index = dict(version=CACHE_VERSION, keys=[s.key for s in samples], groups=[s.group for s in samples],
                     classes=list(classes), size=size, has_masks=has_masks, label_kind=layout.label_kind,
                     channels=layout.channels, entries=entries, warnings=warnings,
                     build_seconds=round(time.time() - start, 2),
                     file_sizes={name: (tmp / name).stat().st_size for name in DATA_FILES})
        index["checksum"] = _checksum(index)
        with open(tmp / "index.json", "w") as f:  # written last: a folder with a valid index is complete
            f.write(json.dumps(index))
        tmp.rename(folder)  # the lock is held and the folder was checked missing: nobody else renames here
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        name = Path(e.filename).name if e.filename else ""
        raise UserError(f"{folder / name if name else folder}: cannot write the cache ({os_reason(e)})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
