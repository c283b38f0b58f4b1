"""Grid pictures for visualize.py: the training pipeline's augmentations (CPU then GPU transforms, several draws
per image, masks or label maps overlaid) and a submission CSV's masks on its test images, each with a legend of the
class colours."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.figures import save_png
from analysis.multiclass import color_labels
from analysis.overlay import class_colors, color_masks, shrink
from data.dataset import TrainDataset, unpack_mask_bits
from data.pipeline import prepare_fold
from tasks.registry import Task, build_task
from transforms.cpu import build_cpu_transforms
from transforms.gpu import build_gpu_transforms
from utils.config import Config

TILE = 384  # longer side of one tile (pixels)


def class_legend(classes: list[str], label_maps: bool = False) -> list[tuple[str, np.ndarray]]:
    """(name, RGB in [0, 1]) per coloured class: class k has class_colors' k-th colour (a label map leaves class 0,
    the background, uncoloured)."""
    colors = class_colors(len(classes)) / 255
    return [(name, colors[k]) for k, name in enumerate(classes) if not (label_maps and k == 0)]


def _grid(tiles: list[list[np.ndarray]], titles: list[list[str]], path: Path,
          legend: list[tuple[str, np.ndarray]]) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows, cols = len(tiles), max(len(r) for r in tiles)
    columns = max(1, min(len(legend), 3 * cols))  # legend entries per row, about as wide as the grid
    legend_height = 0.15 * -(-len(legend) // columns) + 0.1  # inches below the tiles
    height = 3.25 * rows + legend_height
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, height), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (row, names) in enumerate(zip(tiles, titles)):
        for c, (tile, name) in enumerate(zip(row, names)):
            axes[r][c].imshow(tile)
            axes[r][c].set_title(name, fontsize=7)
    fig.legend(handles=[Patch(facecolor=color, edgecolor="none", label=name) for name, color in legend],
               loc="lower center", ncol=columns, fontsize=6, frameon=False, handlelength=1.2, columnspacing=0.8)
    fig.tight_layout(rect=(0, legend_height / height, 1, 1))
    return save_png(fig, path)


def augment_tiles(cfg: Config, runtime, n_images: int, draws: int, progress: bool = True
                  ) -> tuple[list[list[np.ndarray]], list[list[str]]]:
    """Rows: training images; columns: independent draws of data.crop_size, transforms.train and transforms.gpu."""
    data = prepare_fold(cfg, build_task(cfg).layout, runtime, progress)
    indices = data.train_indices[:n_images]
    dataset = TrainDataset(data.cache, indices, build_cpu_transforms(cfg.transforms.train, "transforms.train"),
                           cfg.data.crop_size)
    gpu = build_gpu_transforms(cfg.transforms.gpu, "transforms.gpu")
    tiles, titles = [], []
    for n, index in enumerate(indices):
        row = []
        for _ in range(draws):
            item = dataset[n]
            image = item["image"][None].to(runtime.device).float().div_(255)
            if "labels" in item:  # a label map rides the GPU transforms as one plane, as in training
                labels = item["labels"][None, None].to(runtime.device).float()
                if gpu is not None:
                    image, labels = gpu(image, labels)
                rgb = image[0].mul(255).clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()
                row.append(color_labels(np.moveaxis(shrink(np.moveaxis(rgb, 2, 0), TILE), 0, 2),
                                        shrink(labels[0, 0].round().byte().cpu().numpy(), TILE)))
                continue
            if "mask_bits" in item:
                mask = unpack_mask_bits(item["mask_bits"].to(runtime.device), image.shape[-1])[None].float()
            else:
                mask = item["mask"][None].to(runtime.device).float()
            if gpu is not None:
                image, mask = gpu(image, mask)
            pixels = image[0, 0].mul(255).clamp(0, 255).byte().cpu().numpy()
            row.append(color_masks(shrink(pixels, TILE), shrink(mask[0] > 0.5, TILE).cpu().numpy()))
        tiles.append(row)
        titles.append([f"{data.cache.keys[int(index)]} #{d + 1}" for d in range(draws)])
    return tiles, titles


def augment_grid(cfg: Config, runtime, n_images: int, draws: int, out: Path, progress: bool = True) -> Path:
    legend = class_legend(cfg.task.classes, label_maps=build_task(cfg).mode.label_kind == "map")
    return _grid(*augment_tiles(cfg, runtime, n_images, draws, progress), out, legend)


def submission_tiles(csv_path: str, data_root: str, task: Task, n_images: int
                     ) -> tuple[list[np.ndarray], list[str]]:
    """The first n images of a submission (the task's format), each mask at its test image's size, overlaid."""
    tiles, titles = [], []
    for sample, masks in task.submission.decode(csv_path, data_root):
        if len(tiles) == n_images:
            break
        image = task.layout.read_image(sample.image)
        if image.ndim == 3:  # the overlay colours classes on a gray picture
            image = image.mean(2).astype(np.uint8)
        tiles.append(color_masks(shrink(image, TILE), shrink(masks, TILE)))
        titles.append(sample.key)
    return tiles, titles


def submission_grid(csv_path: str, data_root: str, task: Task, n_images: int, out: Path) -> Path:
    tiles, titles = submission_tiles(csv_path, data_root, task, n_images)
    cols = min(4, len(tiles)) or 1
    return _grid([tiles[i:i + cols] for i in range(0, len(tiles), cols)],
                 [titles[i:i + cols] for i in range(0, len(titles), cols)], out,
                 class_legend(task.classes, label_maps=task.layout.label_kind == "map"))
