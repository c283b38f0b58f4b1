"""RUN_DIR/report/index.html for a multiclass run (analysis.multiclass): curves, IoU per class, the class
confusion matrix, worst images, boundary error, data-cleansing candidates. No threshold sections: argmax has none."""
from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from analysis import figures
from analysis.measures import BOUNDARY_NEAR
from analysis.multiclass import MulticlassAnalysis, row_normalised
from analysis.overlay import FP_COLOR
from analysis.report import STYLE, _fmt, _overlays, _swatch, _table
from analysis.run import Run
from utils.files import make_folder, write_text_atomic


def learning_curves(epochs: list[dict], path: Path) -> str:
    fig, axes = figures.curves_figure(epochs)
    for key, label in (("val_miou", "validation mIoU"), ("val_pixel_accuracy", "pixel accuracy")):
        points = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        if points:
            axes[2].plot(*zip(*points), marker="o", label=label)
    axes[2].legend()
    axes[2].set(title="validation", xlabel="epoch")
    return figures.save_curves(fig, axes, path)


def iou_distribution(iou: np.ndarray, classes: list[str], order: np.ndarray, path: Path) -> str:
    """Box plot per class of the per-image IoU (images where the class is in neither map left out)."""
    fig, ax = plt.subplots(figsize=(9, 0.3 * len(classes) + 1.5))
    columns = [iou[:, i][~np.isnan(iou[:, i])] for i in order[::-1]]
    ax.boxplot([c if len(c) else [np.nan] for c in columns], orientation="horizontal", showmeans=True)
    ax.set_yticks(range(1, len(classes) + 1), [classes[i] for i in order[::-1]], fontsize=7)
    ax.set(xlabel="IoU per image", title="IoU over validation images (triangle: mean)", xlim=(-0.02, 1.02))
    ax.grid(axis="x", alpha=0.3)
    return figures.save_png(fig, path).name


def confusion(matrix: np.ndarray, classes: list[str], path: Path) -> str:
    fig, ax = plt.subplots(figsize=(0.45 * len(classes) + 3, 0.42 * len(classes) + 2.5))
    im = ax.imshow(matrix, cmap="magma_r", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    for (i, j), v in np.ndenumerate(matrix):
        if v >= 0.005:
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="white" if v > 0.5 else "black")
    ax.set(xlabel="predicted label", ylabel="true label", title="share of each true class's pixels per prediction")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return figures.save_png(fig, path).name


def _class_rows(a: MulticlassAnalysis, iou: list[float], order: np.ndarray, normalised: np.ndarray) -> list[str]:
    per_image = a.iou_matrix
    near, mean_d, p95 = a.boundary.near_share(), a.boundary.mean_distance(), a.boundary.percentile_distance(95)
    rows = []
    for i in order:
        column = per_image[:, i][~np.isnan(per_image[:, i])]
        off = normalised[i].copy()
        off[i] = 0
        partner = int(off.argmax())
        confused = f"{html.escape(a.classes[partner])} ({off[partner]:.4f})" if off[partner] > 0 else "–"
        cells = [html.escape(a.classes[i]), _fmt(iou[i]), _fmt(float(np.median(column)) if len(column) else None),
                 _fmt(float(column.min()) if len(column) else None), str(int(a.counts[i].sum())),
                 _fmt(float(near[i]), ".3f"), _fmt(float(mean_d[i]), ".2f"), _fmt(float(p95[i]), ".1f"), confused]
        rows.append(f'<tr data-class="{html.escape(a.classes[i])}">' + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return rows


def _epoch_rows(epochs: list[dict]) -> list[str]:
    rows = []
    for r in epochs:
        cells = [str(r["epoch"]), _fmt(r.get("train_loss")), _fmt(r.get("lr"), ".3e"), _fmt(r.get("val_miou")),
                 _fmt(r.get("val_pixel_accuracy")), _fmt(r.get("seconds"), ".1f")]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")  # from metrics.jsonl
    return rows


def write_report_multiclass(run: Run, a: MulticlassAnalysis, checkpoint: Path, out: Path) -> Path:
    make_folder(out)
    miou, iou, accuracy = a.scores()
    ranked = np.array([np.inf if v is None or np.isnan(v) else v for v in iou])
    order = np.argsort(ranked, kind="stable")  # worst first; classes in neither map last
    normalised = row_normalised(a.counts)
    best = run.best
    b = a.boundary
    boundary_png = figures.boundary(b.near_share(), b.mean_distance(), b.percentile_distance(95), a.classes,
                                    BOUNDARY_NEAR, out / "boundary.png")
    legend = (f"Panels: image | ground truth | prediction | errors. Each class has its colour, background uncoloured. "
              f"Errors: {_swatch(FP_COLOR)}pixel with a wrong label.")
    page = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report: {html.escape(run.cfg.name)}</title>"
            f"<style>{STYLE}</style></head><body>",
            f"<h1>Run {html.escape(run.folder.name)}</h1>",
            f"<p>Config <b>{html.escape(run.cfg.name)}</b> (multiclass): {html.escape(run.cfg.model.arch)}/"
            f"{html.escape(run.cfg.model.encoder)}, checkpoint <code>{html.escape(str(checkpoint))}</code>, data "
            f"<code>{html.escape(run.cfg.data.root)}</code>.</p>",
            f"<p>Validation mIoU of the checkpoint, recomputed on {len(a.keys)} images at their original resolution "
            f"(one confusion matrix over the fold): <b id='recomputed-miou'>{miou:.4f}</b>, pixel accuracy "
            f"<b id='recomputed-accuracy'>{accuracy:.4f}</b>. Best in metrics.jsonl: "
            f"<b id='best-miou'>{_fmt(best['val_miou'] if best else None)}</b> "
            f"(epoch <span id='best-epoch'>{html.escape(str(best['epoch'])) if best else '–'}</span>).</p>",
            "<h2>Learning curves</h2>",
            f"<img src='{learning_curves(run.epochs, out / 'curves.png')}' alt='learning curves'>",
            _table(["epoch", "train loss", "lr", "val mIoU", "pixel accuracy", "seconds"], _epoch_rows(run.epochs)),
            "<h2>IoU per class</h2>",
            f"<img src='{iou_distribution(a.iou_matrix, a.classes, order, out / 'iou_per_class.png')}' "
            "alt='IoU distribution per class'>",
            "<p>Worst first. IoU: over the whole fold (as validation scores it); median and min: over the images "
            "where the class is in truth or prediction. Boundary columns: see below. Most confused with: the largest "
            "off-diagonal share of the class's row in the confusion matrix.</p>",
            _table(["class", "IoU", "median per image", "min per image", "truth pixels", "wrong px near boundary",
                    "mean dist (px)", "95th pct dist (px)", "most confused with"],
                   _class_rows(a, iou, order, normalised)),
            "<h2>Class confusion matrix</h2>",
            "<p>Rows: true label, columns: predicted label, background included; each row divided by the number of "
            "pixels of its true class, summed over all validation images.</p>",
            f"<img src='{confusion(normalised, a.classes, out / 'confusion.png')}' alt='confusion'>",
            f"<h2>The {len(a.worst)} worst validation images (lowest image mIoU)</h2><p>{legend}</p>",
            _overlays(a.worst, out, "worst", "image mIoU"),
            "<h2>Boundary error</h2>",
            f"<p>Per class, on its one-hot masks. Left: of the wrong pixels of a class, the share within "
            f"{BOUNDARY_NEAR:g} px of the true boundary. Right: symmetric surface distance, mean and 95th percentile, "
            "on images where both masks are present.</p>",
            f"<img src='{boundary_png}' alt='boundary error'>",
            "<h2>Data cleansing: training images the model disagrees with most</h2>",
            f"<p>Lowest mIoU against their own labels, at training resolution: look for label errors. {legend}</p>",
            (_overlays(a.cleansing, out, "cleansing", "image mIoU") if a.cleansing
             else "<p>not computed (--cleansing 0)</p>"),
            "</body></html>"]
    path = out / "index.html"
    write_text_atomic(path, "\n".join(page))
    return path
