"""Image and mask folders: finding the samples of a split (images and masks matched by their key, the path under
the folder without the suffix), reading masks as class indices or bit planes, and writing them back in the set's
own encoding. Pillow reads the masks: OpenCV turns palette PNGs into colours and loses the indices.

Masks: a palette PNG (PIL mode P: the indices are the labels, as Pascal VOC stores them), a grayscale PNG (the
values), or an RGB PNG (mapped back by task.folders.palette and void_color). Every problem is a one-line DataError
naming the file: a mask whose size differs from its image, a value that is neither a class nor void, a colour in
no palette entry, an image without a mask in a labelled split or the reverse, a listed stem that is missing, two
files with one key.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tasks.folders.settings import FolderSettings
from utils.errors import DataError

LISTED = 5  # skipped files named in a warning


@dataclass(frozen=True)
class MaskEncoding:
    """How a set's masks are stored, so that predictions are written the same way."""
    mode: str  # PIL mode written: "P" (palette), "L" (grayscale) or "RGB" (colours of task.folders.palette)
    palette: tuple[int, ...] | None = None  # mode P: the flat [r, g, b, ...] palette kept from the set's masks
    foreground: int = 1  # binary and multilabel masks: the value of a foreground pixel (1 or 255)


@dataclass(frozen=True)
class FolderSample:
    key: str  # the image's path under its folder without the suffix ("2007_000032"): unique, the output's name
    image: Path
    annotation: Path | tuple[Path, ...] | None  # the mask; multilabel: one per class; None for test images
    group: str  # every image is its own group
    encoding: MaskEncoding | None = None  # test images: how the set's masks are written (predictions follow it)


@dataclass
class Scan:
    samples: list[FolderSample]
    warnings: list[str]


# ------------------------------------------------------------------------------------------------ finding


def files_by_key(folder: Path, suffixes: tuple[str, ...], exclude: tuple[Path, ...] = ()
                 ) -> tuple[dict[str, Path], list[str]]:
    """{key: file} of the files under `folder` (any depth) whose name ends in one of `suffixes` (any case), the key
    being the path under `folder` without that ending; and a warning naming the other files, which are skipped.
    A missing folder holds nothing. Two files with one key are a DataError naming both."""
    if not folder.is_dir():
        return {}, []
    found: dict[str, Path] = {}
    skipped: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if path.name.startswith(".") or not path.is_file() or any(path.is_relative_to(e) for e in exclude):
            continue
        relative = path.relative_to(folder).as_posix()
        suffix = next((s for s in suffixes if relative.lower().endswith(s.lower()) and len(relative) > len(s)), None)
        if suffix is None:
            skipped.append(path)
            continue
        key = relative[:-len(suffix)]
        if key in found:
            raise DataError(f"{path}: has the same stem {key!r} as {found[key]}; keep one of them")
        found[key] = path
    warnings = []
    if skipped:
        names = ", ".join(p.relative_to(folder).as_posix() for p in skipped[:LISTED])
        more = f" and {len(skipped) - LISTED} more" if len(skipped) > LISTED else ""
        warnings.append(f"{folder}: skipped {len(skipped)} file(s) not ending in {' '.join(suffixes)}: {names}{more}")
    return found, warnings


def read_split_list(path: Path) -> list[str]:
    """The stems of a split file (one per line; blank lines and `#` comments skipped); a stem listed twice is an
    error naming the lines."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: split list not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable split list ({e})") from None
    stems: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        stem = line.split("#", 1)[0].strip()
        if not stem:
            continue
        if stem in stems:
            raise DataError(f"{path}: line {number}: stem {stem!r} is listed again (first on line {stems[stem]})")
        stems[stem] = number
    return list(stems)


class FolderScanner:
    """The samples of one set of folders (settings), for a mode: label maps (one mask folder) or one mask folder
    per class (multilabel)."""

    def __init__(self, root, settings: FolderSettings, classes: list[str], per_class_masks: bool):
        self.root, self.settings, self.classes = Path(root), settings, classes
        self.per_class_masks = per_class_masks

    def labelled(self, splits: list[str] | None) -> Scan:
        """Samples with their masks, of the named splits in order (None: a set without split information, whose
        labelled images are those with a mask)."""
        samples, warnings = [], []
        for split in splits if splits is not None else [None]:
            scan = self._split(split, labelled=True)
            samples += scan.samples
            warnings += scan.warnings
        seen: dict[str, FolderSample] = {}
        for sample in samples:
            if sample.key in seen:
                raise DataError(f"{sample.image}: stem {sample.key!r} is in two splits (also {seen[sample.key].image})")
            seen[sample.key] = sample
        return Scan(samples, warnings)

    def test(self) -> Scan:
        """The test images: the test split, or (without split information) the images that have no mask."""
        return self._split(self.settings.test_split if self.settings.has_splits else None, labelled=False)

    def _images(self, split: str | None) -> tuple[Path, dict[str, Path], list[str]]:
        folder = self.settings.folder(self.root, "images", split)
        masks = self.settings.folder(self.root, "masks", split)
        exclude = (masks,) if masks.is_relative_to(folder) and masks != folder else ()
        found, warnings = files_by_key(folder, self.settings.image_suffixes(), exclude)
        return folder, found, warnings

    def _masks(self, split: str | None) -> tuple[Path, dict[str, Path | tuple[Path, ...]], list[str]]:
        """{key: mask} of a split; per class: {key: (mask of each class)}, every class folder holding every key."""
        folder = self.settings.folder(self.root, "masks", split)
        suffix = (self.settings.mask_suffix,)
        if not self.per_class_masks:
            found, warnings = files_by_key(folder, suffix)
            return folder, found, warnings
        per_class, warnings = [], []
        for name in self.classes:
            found, skipped = files_by_key(folder / name, suffix)
            per_class.append(found)
            warnings += skipped
        keys = sorted(set().union(*per_class))
        for key in keys:
            for name, found in zip(self.classes, per_class):
                if key not in found:
                    have = next(f[key] for f in per_class if key in f)
                    raise DataError(f"{folder / name / (key + suffix[0])}: missing; every class folder needs a mask "
                                    f"of each labelled image ({have} exists)")
        return folder, {key: tuple(found[key] for found in per_class) for key in keys}, warnings

    def _split(self, split: str | None, labelled: bool) -> Scan:
        image_folder, images, warnings = self._images(split)
        listed = None
        if self.settings.split_lists is not None and split is not None:
            listed = read_split_list(self.root / self.settings.split_lists / f"{split}.txt")
        if not labelled:
            if self.settings.has_splits and not image_folder.is_dir():
                raise DataError(f"{image_folder}: the {split} image folder is not there")
            if listed is None and not self.settings.has_splits:
                listed = sorted(set(images) - set(self._masks(None)[1]))
            keys = self._check_listed(listed, images, image_folder, split) if listed is not None else sorted(images)
            return Scan([FolderSample(k, images[k], None, k) for k in keys], warnings)
        mask_folder, masks, mask_warnings = self._masks(split)
        warnings += mask_warnings
        if not image_folder.is_dir():
            raise DataError(f"{image_folder}: image folder not found")
        for key in sorted(set(masks) - set(images)):
            shown = masks[key][0] if isinstance(masks[key], tuple) else masks[key]
            raise DataError(f"{shown}: mask without an image (expected {image_folder / key} ending in "
                            f"{' or '.join(self.settings.image_suffixes())})")
        if listed is not None:
            keys = self._check_listed(listed, images, image_folder, split)
        elif self.settings.has_splits:
            keys = sorted(images)
        else:
            keys = sorted(set(images) & set(masks))
        for key in keys:
            if key not in masks:
                raise DataError(f"{images[key]}: image without a mask in the labelled split {split!r} (expected "
                                f"{mask_folder / (key + self.settings.mask_suffix)})")
        return Scan([FolderSample(k, images[k], masks[k], k) for k in keys], warnings)

    def _check_listed(self, listed: list[str], images: dict, image_folder: Path, split: str | None) -> list[str]:
        if self.settings.split_lists is None:
            return listed
        path = self.root / self.settings.split_lists / f"{split}.txt"
        for stem in listed:
            if stem not in images:
                raise DataError(f"{path}: stem {stem!r} is listed but {image_folder} has no image of it")
        return listed


# ------------------------------------------------------------------------------------------------ reading


def open_mask(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable mask ({' '.join(str(e).split())[:120]})") from None
    return image


def mask_values(path: Path, palette=None, void_color=None, void: int | None = None) -> np.ndarray:
    """(H, W) integer values of a mask: palette indices (mode P), gray values (L, 1, I;16), or RGB colours mapped
    to their index in `palette` (and `void_color` to `void`)."""
    image = open_mask(path)
    if image.mode in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.int64 if image.mode.startswith("I") else np.uint8)
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image.convert("RGB"))
        if palette is None:
            if (rgb == rgb[..., :1]).all():  # a gray mask saved as RGB
                return rgb[..., 0]
            raise DataError(f"{path}: an RGB mask of colours, but task.folders.palette is not set to map them to "
                            "classes")
        return _colors_to_labels(path, rgb, palette, void_color, void)
    raise DataError(f"{path}: mask of PIL mode {image.mode!r}; expected a palette, grayscale or RGB PNG")


def _colors_to_labels(path: Path, rgb: np.ndarray, palette, void_color, void) -> np.ndarray:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed.reshape(-1), return_inverse=True)
    table = {(r << 16) | (g << 8) | b: label for label, (r, g, b) in enumerate(palette)}
    if void_color is not None and void is not None:
        r, g, b = void_color
        table[(r << 16) | (g << 8) | b] = void
    labels = np.empty(len(colours), np.int64)
    for i, colour in enumerate(colours.tolist()):
        if colour not in table:
            count = int((inverse == i).sum())
            raise DataError(f"{path}: colour {[colour >> 16, (colour >> 8) & 255, colour & 255]} ({count} pixels) "
                            "is in no entry of task.folders.palette" + (" nor void_color" if void_color else ""))
        labels[i] = table[colour]
    return labels[inverse].reshape(packed.shape)


def check_size(path: Path, values: np.ndarray, image_hw: tuple[int, int] | None, image: Path | None) -> None:
    if image_hw is not None and tuple(values.shape[:2]) != tuple(image_hw):
        raise DataError(f"{path}: mask is {values.shape[1]}x{values.shape[0]} but its image {image} is "
                        f"{image_hw[1]}x{image_hw[0]}")


def read_label_map(path: Path, num_classes: int, void: int | None, palette=None, void_color=None,
                   image_hw=None, image: Path | None = None) -> np.ndarray:
    """(H, W) uint8 class indices, void kept as `void`; any other value is an error naming the file."""
    values = mask_values(path, palette, void_color, void)
    check_size(path, values, image_hw, image)
    present = np.unique(values)
    bad = present[(present >= num_classes) & (present != (-1 if void is None else void))]
    if len(bad):
        void_text = "no void (task.ignore_index: null)" if void is None else f"void {void}"
        raise DataError(f"{path}: label value {int(bad[0])} is neither a class (0..{num_classes - 1}) nor "
                        f"{void_text}" + (f" ({len(bad)} such values)" if len(bad) > 1 else ""))
    return values.astype(np.uint8)


def read_binary(path: Path, image_hw=None, image: Path | None = None, palette=None) -> np.ndarray:
    """(H, W) bool foreground of a binary mask: 0 and one foreground value, 1 or 255 (void is not supported)."""
    values = mask_values(path, palette)
    check_size(path, values, image_hw, image)
    present = set(np.unique(values).tolist())
    if not (present <= {0, 1} or present <= {0, 255}):
        other = sorted(present - {0, 1, 255}) or sorted(present)
        raise DataError(f"{path}: value(s) {', '.join(map(str, other[:5]))} in a binary mask; expected 0 and one "
                        "foreground value (1 or 255)")
    return values > 0


def foreground_value(path: Path) -> int:
    """The foreground value a binary mask uses (1 or 255), 0 for an empty mask."""
    return int(mask_values(path).max(initial=0))


def encoding_of(path: Path, palette, binary: bool, masks_to_probe: list[Path]) -> MaskEncoding:
    """The encoding of a set whose first mask is `path`: its mode and palette; for binary masks the foreground
    value of the first non-empty one of `masks_to_probe`."""
    image = open_mask(path)
    foreground = 1
    if binary:
        foreground = next((v for v in map(foreground_value, masks_to_probe) if v), 255)
    if image.mode == "P":
        return MaskEncoding("P", tuple(image.getpalette() or ()), foreground)
    if image.mode in ("RGB", "RGBA") and palette is not None:
        return MaskEncoding("RGB", None, foreground)
    return MaskEncoding("L", None, foreground)


def default_encoding(palette, void_color, void: int | None, binary: bool) -> MaskEncoding:
    """Without a mask to copy: a palette PNG of task.folders.palette when set, else grayscale (binary: 0/255)."""
    if palette is None:
        return MaskEncoding("L", None, 255 if binary else 1)
    table = [0] * 768
    for label, colour in enumerate(palette):
        table[3 * label:3 * label + 3] = colour
    if void_color is not None and void is not None:
        table[3 * void:3 * void + 3] = void_color
    return MaskEncoding("P", tuple(table), 1)


def write_mask(path: Path, values: np.ndarray, encoding: MaskEncoding, palette=None) -> None:
    """An (H, W) uint8 label map (binary: 0/1 plane, written as 0/foreground) as a PNG in `encoding`."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    if encoding.mode == "RGB":
        table = np.zeros((256, 3), np.uint8)
        table[:len(palette)] = palette
        image = Image.fromarray(table[values], "RGB")
    elif encoding.mode == "P":
        image = Image.fromarray(values * np.uint8(encoding.foreground) if encoding.foreground != 1 else values, "P")
        image.putpalette(list(encoding.palette))
    else:
        image = Image.fromarray(values * np.uint8(encoding.foreground) if encoding.foreground != 1 else values, "L")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")


def read_image(path: Path, channels: int) -> np.ndarray:
    """(H, W) grayscale or (H, W, 3) RGB uint8 as stored: no EXIF rotation, since the masks (read by Pillow) are
    drawn on the stored pixels."""
    flags = (cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DataError(f"{path}: missing or unreadable image")
    return image if channels == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file's header (no decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({' '.join(str(e).split())[:120]})") from None
    return height, width
