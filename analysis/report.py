"""RUN_DIR/report/index.html: a static page (opens from disk, no server, no script) with PNG figures beside it."""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from analysis import figures
from analysis.evaluate import FoldAnalysis
from analysis.measures import BOUNDARY_NEAR
from analysis.overlay import BOTH_COLOR, FN_COLOR, FP_COLOR
from analysis.run import Run
from trainer.thresholds import BINS
from utils.files import make_folder, write_text_atomic

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1400px;color:#222}table{border-collapse:collapse;
font-size:13px}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#eee}td:first-child{
text-align:left}img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}.swatch{display:inline-block;width:1em;
height:1em;vertical-align:middle;margin:0 .3em}"""


def _fmt(value, spec: str = ".4f") -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def _table(header: list[str], rows: list[str]) -> str:
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(rows) + \
        "</table>"


def _epoch_rows(epochs: list[dict]) -> list[str]:
    rows = []
    for r in epochs:
        cells = [("epoch", str(r["epoch"])), ("train_loss", _fmt(r.get("train_loss"))),
                 ("lr", _fmt(r.get("lr"), ".3e")), ("val_dice", _fmt(r.get("val_dice"))),
                 ("best_dice", _fmt(r.get("best_dice"))), ("seconds", _fmt(r.get("seconds"), ".1f"))]
        epoch = html.escape(str(r["epoch"]))  # every value from metrics.jsonl is escaped: the file may be edited
        rows.append("<tr>" + "".join(f'<td data-metric="{k}" data-epoch="{epoch}">{html.escape(v)}</td>'
                                     for k, v in cells) + "</tr>")
    return rows


def _class_rows(a: FoldAnalysis, order: np.ndarray) -> list[str]:
    dice = a.dice_matrix
    near, mean_d, p95 = a.boundary.near_share(), a.boundary.mean_distance(), a.boundary.percentile_distance(95)
    rows = []
    for i in order:
        curve = a.threshold_dice[i]
        best = int(curve[1:].argmax()) + 1
        row = a.confusion[i]
        partner = int(row.argmax())
        confused = f"{html.escape(a.classes[partner])} ({row[partner]:.4f})" if row[partner] > 0 else "–"
        cells = [html.escape(a.classes[i]), _fmt(float(dice[:, i].mean())), _fmt(float(np.median(dice[:, i]))),
                 _fmt(float(dice[:, i].min())), _fmt(best / BINS, ".2f"), _fmt(float(curve[best])),
                 _fmt(float(near[i]), ".3f"), _fmt(float(mean_d[i]), ".2f"), _fmt(float(p95[i]), ".1f"), confused]
        rows.append(f'<tr data-class="{html.escape(a.classes[i])}">' + "".join(f"<td>{c}</td>" for c in cells)
                    + "</tr>")
    return rows


def _overlays(entries: list, folder: Path, prefix: str, score_label: str = "mean Dice") -> str:
    parts = []
    for n, (score, key, rgb) in enumerate(entries):
        name = figures.image(rgb, folder / f"{prefix}_{n:02d}.png")
        parts.append(f'<figure><img src="{name}" alt="{html.escape(key)}"><figcaption>{html.escape(key)}: '
                     f"{score_label} {score:.4f}</figcaption></figure>")
    return "".join(parts) or "<p>none</p>"


def _swatch(color) -> str:
    return f'<span class="swatch" style="background:rgb{tuple(color)}"></span>'


def write_report(run: Run, a: FoldAnalysis, checkpoint: Path, out: Path) -> Path:
    make_folder(out)
    dice = a.dice_matrix
    class_means = dice.mean(0)
    order = np.argsort(class_means)  # worst first
    best = run.best
    b = a.boundary
    boundary_png = figures.boundary(b.near_share(), b.mean_distance(), b.percentile_distance(95), a.classes,
                                    BOUNDARY_NEAR, out / "boundary.png")
    legend = (f"Panels: image | ground truth | prediction | errors. Each bone has its colour; where bones overlap "
              f"the colours mix and the overlap zone is outlined in white. Errors: {_swatch(FP_COLOR)}false positive "
              f"{_swatch(FN_COLOR)}false negative {_swatch(BOTH_COLOR)}both (one bone missed, another predicted).")
    page = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report: {html.escape(run.cfg.name)}</title>"
            f"<style>{STYLE}</style></head><body>",
            f"<h1>Run {html.escape(run.folder.name)}</h1>",
            f"<p>Config <b>{html.escape(run.cfg.name)}</b>: {html.escape(run.cfg.model.arch)}/"
            f"{html.escape(run.cfg.model.encoder)}, fold {run.cfg.data.fold} of {run.cfg.data.n_splits}, checkpoint "
            f"<code>{html.escape(str(checkpoint))}</code>, data <code>{html.escape(run.cfg.data.root)}</code>.</p>",
            f"<p>Validation Dice of the checkpoint, recomputed on {len(a.keys)} images at their original resolution "
            f"(threshold {a.threshold:g}): <b id='recomputed-dice'>{float(class_means.mean()):.4f}</b>. Best in "
            f"metrics.jsonl: <b id='best-dice'>{_fmt(best['val_dice'] if best else None)}</b> "
            f"(epoch <span id='best-epoch'>{html.escape(str(best['epoch'])) if best else '–'}</span>).</p>",
            "<h2>Learning curves</h2>",
            f"<img src='{figures.learning_curves(run.epochs, out / 'curves.png')}' alt='learning curves'>",
            f"<img src='{figures.per_class_curves(run.epochs, a.classes, out / 'per_class_curves.png')}' "
            "alt='per-class Dice over epochs'>",
            _table(["epoch", "train loss", "lr", "val Dice", "best Dice", "seconds"], _epoch_rows(run.epochs)),
            "<h2>Dice per class</h2>",
            f"<img src='{figures.dice_distribution(dice, a.classes, order, out / 'dice_per_class.png')}' "
            "alt='Dice distribution per class'>",
            "<p>Worst first. Threshold columns: the threshold that maximises the class's mean Dice and that Dice. "
            "Boundary columns: see below. Most confused with: the largest C[a, b] of the row.</p>",
            _table(["class", "mean Dice", "median", "min", "best threshold", "Dice there", "wrong px near boundary",
                    "mean dist (px)", "95th pct dist (px)", "most confused with"], _class_rows(a, order)),
            f"<h2>The {len(a.worst)} worst validation images</h2><p>{legend}</p>",
            _overlays(a.worst, out, "worst"),
            "<h2>Confusion between bones</h2>",
            "<p>Multi-label, so not the usual confusion matrix: C[a, b] = (number of pixels in bone a's ground truth "
            "that the model predicts as bone b and <i>not</i> as bone a) / (number of pixels in bone a's ground "
            "truth), summed over all validation images before dividing. The diagonal is 0; a row's sum can exceed "
            "a's miss rate when a missed pixel is given to several bones.</p>",
            f"<img src='{figures.confusion(a.confusion, a.classes, out / 'confusion.png')}' alt='confusion'>",
            "<h2>Boundary error</h2>",
            f"<p>Left: of the wrong pixels (ground truth XOR prediction) of a class, the share within "
            f"{BOUNDARY_NEAR:g} px of the true boundary: near 1, the masks only disagree at the edges. Right: the "
            "symmetric surface distance (every boundary pixel of one mask to the nearest boundary pixel of the other, "
            "both ways), mean and 95th percentile, on images where both masks are present.</p>",
            f"<img src='{boundary_png}' alt='boundary error'>",
            "<h2>Dice against threshold</h2>",
            f"<img src='{figures.thresholds(a.threshold_dice, a.classes, a.threshold, out / 'thresholds.png')}' "
            "alt='Dice against threshold'>",
            "<h2>Data cleansing: training images the model disagrees with most</h2>",
            f"<p>Lowest mean Dice against their own labels, at training resolution: look for label errors. "
            f"{legend}</p>",
            _overlays(a.cleansing, out, "cleansing") if a.cleansing else "<p>not computed (--cleansing 0)</p>",
            "</body></html>"]
    path = out / "index.html"
    write_text_atomic(path, "\n".join(page))
    return path
