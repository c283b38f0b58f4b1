"""The folders layout's settings: task.folders with its preset's values and the defaults filled in, checked once
(tasks.registry.build_task builds the layout before any data work, so a bad key fails first)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from utils.config import FoldersConfig
from utils.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # image_suffix: null reads any of these


def voc_palette(n: int = 256) -> list[list[int]]:
    """Pascal VOC's colour map: label i's bits, three at a time, set the high bits of r, g and b (VOCdevkit's
    labelcolormap), so 0 is black, 1 dark red, 15 person pink, 255 (void) cream (224, 224, 192)."""
    out = []
    for label in range(n):
        rgb, value = [0, 0, 0], label
        for shift in range(7, -1, -1):
            for c in range(3):
                rgb[c] |= ((value >> c) & 1) << shift
            value >>= 3
        out.append(rgb)
    return out


PRESETS = {
    "voc": {"images": "JPEGImages", "masks": "SegmentationClass", "image_suffix": ".jpg",
            "split_lists": "ImageSets/Segmentation", "palette": voc_palette(21), "void_color": voc_palette()[255]},
    "mmseg": {"images": "img_dir/{split}", "masks": "ann_dir/{split}"},
}
DEFAULTS = {"images": "images", "masks": "masks", "image_suffix": None, "mask_suffix": ".png", "split_lists": None,
            "train_split": "train", "val_split": "val", "test_split": "test", "palette": None, "void_color": None}


@dataclass(frozen=True)
class FolderSettings:
    """Resolved task.folders: no null left but the optional ones (image_suffix, split_lists, palette, void_color)."""
    images: str
    masks: str
    image_suffix: str | None
    mask_suffix: str
    split_lists: str | None
    train_split: str
    val_split: str
    test_split: str
    channels: int
    palette: tuple[tuple[int, int, int], ...] | None
    void_color: tuple[int, int, int] | None

    @property
    def has_splits(self) -> bool:
        """Whether the set says which image is in which split (lists, or `{split}` in a folder name); without,
        labelled images are those with a mask, and test images those without."""
        return self.split_lists is not None or "{split}" in self.images

    def folder(self, root: Path, kind: str, split: str | None) -> Path:
        """The images or masks folder (`kind`) of a split."""
        pattern = self.images if kind == "images" else self.masks
        return Path(root) / pattern.replace("{split}", split or "")

    def image_suffixes(self) -> tuple[str, ...]:
        return (self.image_suffix,) if self.image_suffix else IMAGE_SUFFIXES

    def fingerprint(self) -> str:
        """A short hash of everything that changes what the cache holds."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def resolve(config: FoldersConfig | None, num_classes: int) -> FolderSettings:
    """task.folders -> FolderSettings: a key the user set wins over the preset, the preset over the default."""
    config = config or FoldersConfig()
    preset = PRESETS.get(config.preset, {})
    values = {key: getattr(config, key) if getattr(config, key) is not None else preset.get(key, default)
              for key, default in DEFAULTS.items()}
    for key in ("images", "masks", "mask_suffix", "train_split", "val_split", "test_split"):
        if not values[key] or not isinstance(values[key], str):
            raise ConfigError(f"task.folders.{key}: must be a non-empty string, got {values[key]!r}")
    for key in ("images", "masks", "split_lists"):
        text = values[key]
        if text is not None and (Path(text).is_absolute() or ".." in Path(text).parts):
            raise ConfigError(f"task.folders.{key}: {text!r} must be a folder inside data.root (a relative path)")
        if text is not None and ("{" in text.replace("{split}", "") or "}" in text.replace("{split}", "")):
            raise ConfigError(f"task.folders.{key}: {text!r}: the only placeholder is {{split}}")
    if ("{split}" in values["masks"]) != ("{split}" in values["images"]):
        raise ConfigError(f"task.folders: images {values['images']!r} and masks {values['masks']!r}: put {{split}} "
                          "in both folder names or in neither")
    splits = [values[k] for k in ("train_split", "val_split", "test_split")]
    if len(set(splits)) != 3:
        raise ConfigError(f"task.folders: train_split, val_split and test_split must differ, got {splits}")
    palette = values["palette"]
    if palette is not None:
        palette = tuple(_color(c, f"task.folders.palette[{i}]") for i, c in enumerate(palette))
        if len(palette) < num_classes:
            raise ConfigError(f"task.folders.palette: {len(palette)} colours for {num_classes} classes; give one "
                              "[r, g, b] per class")
        if len(set(palette[:num_classes])) != num_classes:
            raise ConfigError("task.folders.palette: two classes share a colour")
    void = None if values["void_color"] is None else _color(values["void_color"], "task.folders.void_color")
    if void is not None and palette is not None and void in palette[:num_classes]:
        raise ConfigError(f"task.folders.void_color: {list(void)} is the colour of a class in task.folders.palette")
    return FolderSettings(values["images"], values["masks"], values["image_suffix"], values["mask_suffix"],
                          values["split_lists"], *splits, config.channels, palette, void)


def _color(value, key: str) -> tuple[int, int, int]:
    if (not isinstance(value, list | tuple) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise ConfigError(f"{key}: expected [r, g, b] with values in 0..255, got {value!r}")
    return (int(value[0]), int(value[1]), int(value[2]))
