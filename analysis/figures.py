"""The report's figures, drawn with matplotlib (Agg: no display) and saved as PNG beside index.html."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: before pyplot is imported
import matplotlib.pyplot as plt
import numpy as np

from trainer.thresholds import BINS


def save_png(fig, path: Path) -> Path:
    """Written under a temporary name, then renamed: a crash never leaves a half-written PNG."""
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
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
    axes[1].plot(x, [r.get("lr") for r in epochs], marker="o")
    axes[1].set(title="learning rate", xlabel="epoch", yscale="log")
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
    """Small multiples: mean Dice against threshold per class, the optimum marked."""
    cols = 6
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), sharex=True, sharey=True, squeeze=False)
    grid = np.arange(BINS) / BINS
    for ax, name, curve in zip(axes.flat, classes, curves):
        best = int(curve[1:].argmax()) + 1
        ax.plot(grid[1:], curve[1:], lw=1.2)
        ax.axvline(used, color="gray", lw=0.8, ls=":")
        ax.plot(grid[best], curve[best], "ro", ms=4)
        ax.set_title(f"{name}: {grid[best]:.2f} → {curve[best]:.3f}", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    fig.suptitle("validation Dice against threshold (red: optimum, dotted: the threshold in use)")
    return _save(fig, path)


def image(rgb: np.ndarray, path: Path) -> str:
    tmp = path.with_name(path.name + ".tmp")
    plt.imsave(tmp, rgb, format="png")
    tmp.replace(path)
    return path.name
