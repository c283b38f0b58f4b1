"""The report's figures, drawn with matplotlib (Agg: no display) and saved as PNG beside index.html."""
from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported
import matplotlib.pyplot as plt
import numpy as np

from trainer.thresholds import BINS
from utils.errors import UserError
from utils.files import atomic_path, write_bytes_atomic


def save_png(fig, path: Path) -> Path:
    """Written under a temporary name, then renamed (utils.files.atomic_path): a crash never leaves a half-written
    PNG, and a full or read-only disk is one line naming it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _save(fig, path: Path) -> str:
    return save_png(fig, path).name


def curves_figure(epochs: list[dict]):
    """Training loss and learning rate in the first two of three panels; the third is the task's validation score,
    drawn by the caller, which then saves with `save_curves`."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    x = [r["epoch"] for r in epochs]
    axes[0].plot(x, [r.get("train_loss") for r in epochs], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    lrs = [r.get("lr") for r in epochs]
    axes[1].plot(x, lrs, marker="o")
    # a log scale shows warm-up and decay alike, but needs a positive value (a cosine schedule ends at 0)
    positive = any(isinstance(v, (int, float)) and v > 0 for v in lrs)
    axes[1].set(title="learning rate", xlabel="epoch", yscale="log" if positive else "linear")
    return fig, axes


def save_curves(fig, axes, path: Path) -> str:
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(fig, path)


def learning_curves(epochs: list[dict], path: Path) -> str:
    fig, axes = curves_figure(epochs)
    val = [(r["epoch"], r["val_dice"]) for r in epochs if r.get("val_dice") is not None]
    if val:
        axes[2].plot(*zip(*val), marker="o", label="validation Dice")
        axes[2].plot(*zip(*[(r["epoch"], r["best_dice"]) for r in epochs if r.get("best_dice") is not None]),
                     linestyle="--", label="best so far")
        axes[2].legend()
    axes[2].set(title="validation Dice", xlabel="epoch")
    return save_curves(fig, axes, path)


def per_class_curves(epochs: list[dict], classes: list[str], path: Path) -> str:
    """Classes x validated epochs heatmap: which bones learn late."""
    val = [r for r in epochs if r.get("val_dice_per_class")]
    grid = np.array([[r["val_dice_per_class"].get(c, np.nan) for r in val] for c in classes]) if val else \
        np.full((len(classes), 1), np.nan)
    fig, ax = plt.subplots(figsize=(max(6, 0.5 * grid.shape[1] + 3), 0.28 * len(classes) + 1.5))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xticks(range(len(val)), [r["epoch"] for r in val], fontsize=7)
    ax.set(xlabel="epoch", title="validation Dice per class")
    fig.colorbar(im, ax=ax)
    return _save(fig, path)


def dice_distribution(dice: np.ndarray, classes: list[str], order: np.ndarray, path: Path) -> str:
    """Box plot per class of the per-image Dice, worst mean at the top."""
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(classes) + 1.5))
    ax.boxplot([dice[:, i] for i in order[::-1]], orientation="horizontal", showmeans=True)
    ax.set_yticks(range(1, len(classes) + 1), [classes[i] for i in order[::-1]], fontsize=7)
    ax.set(xlabel="Dice per image", title="Dice over validation images (triangle: mean)", xlim=(-0.02, 1.02))
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def confusion(matrix: np.ndarray, classes: list[str], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(10, 9))
    im = ax.imshow(matrix, cmap="magma_r", vmin=0, interpolation="nearest")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="predicted as bone b (and not as a)", ylabel="true bone a",
           title="C[a, b]: share of a's truth pixels given to b and not to a")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def boundary(near: np.ndarray, mean: np.ndarray, p95: np.ndarray, classes: list[str], near_px: float,
             path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.3 * len(classes) + 1.5), sharey=True)
    y = np.arange(len(classes))
    axes[0].barh(y, np.nan_to_num(near))
    axes[0].set(xlim=(0, 1), xlabel=f"share of wrong pixels within {near_px:g} px of the true boundary")
    axes[1].barh(y - 0.2, np.nan_to_num(mean), height=0.4, label="mean")
    axes[1].barh(y + 0.2, np.nan_to_num(p95), height=0.4, label="95th percentile")
    axes[1].set(xlabel="surface distance (px, original resolution)")
    axes[1].legend()
    axes[0].set_yticks(y, classes, fontsize=7)
    axes[0].invert_yaxis()
    for ax in axes:
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def thresholds(curves: np.ndarray, classes: list[str], used: float, path: Path) -> str:
    """Per class (rows) and threshold (columns): the Dice lost against the class's best threshold, so the width of
    each plateau shows how much the choice matters; the optimum marked, the threshold in use dotted. One heatmap
    rather than 29 small line plots: matplotlib spends seconds laying out that many axes."""
    grid = np.arange(BINS) / BINS
    best = curves[:, 1:].argmax(1) + 1
    lost = curves[:, 1:] - curves[np.arange(len(classes)), best][:, None]
    fig, ax = plt.subplots(figsize=(10, 0.28 * len(classes) + 1.6))
    im = ax.imshow(np.clip(lost, -0.1, 0), aspect="auto", cmap="viridis", vmin=-0.1, vmax=0,
                   interpolation="nearest", extent=(grid[1] - 0.005, grid[-1] + 0.005, len(classes) - 0.5, -0.5))
    ax.plot(grid[best], np.arange(len(classes)), "o", color="red", ms=3, label="best threshold")
    ax.axvline(used, color="white", lw=1, ls=":", label=f"in use ({used:g})")
    ax.set_yticks(range(len(classes)), [f"{c}: {grid[b]:.2f} → {curves[i, b]:.3f}"
                                        for i, (c, b) in enumerate(zip(classes, best))], fontsize=7)
    ax.set(xlabel="threshold", title="validation Dice against threshold: Dice lost against each class's best")
    ax.legend(loc="lower right", fontsize=7)
    fig.colorbar(im, ax=ax, label="Dice - best Dice (clipped at -0.1)")
    return _save(fig, path)


def image(rgb: np.ndarray, path: Path) -> str:
    """An overlay as PNG by OpenCV at compression level 1: several times faster to encode than matplotlib's
    level 6 on these large, mostly flat images, for a file about a third larger."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise UserError(f"{path}: OpenCV could not encode the overlay as PNG")
    write_bytes_atomic(path, data.tobytes())
    return path.name
