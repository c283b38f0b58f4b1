"""analyze.py --compare: one table of several runs (best validation score in the task's metric - Dice for a
multilabel run, mIoU for a multiclass one - per class, epochs, time) with the config keys on which they differ as
columns, written as markdown, CSV and HTML: the ablation table. A k-fold run folder (with folds.json) gives one row
per fold and a mean ± std row. Runs of different task modes score different metrics and are not compared."""
from __future__ import annotations

import csv
import html
import io
import json
import statistics
from pathlib import Path

from analysis.run import open_run
from utils.config import to_dict
from utils.errors import UserError
from utils.files import check_output_folder, make_folder, write_text_atomic

IGNORED_PREFIXES = ("logging.", "name")  # keys that never change a result


def _flat(node, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict) and node:
        out = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(node) if isinstance(node, (list, dict)) else str(node)}


def _run_row(folder: Path, label: str) -> dict:
    run = open_run(folder)
    best, key = run.best, run.score_key
    if best is None:
        raise UserError(f"{folder / 'metrics.jsonl'}: no validated epoch to compare (no {key})")
    return {"run": label, "folder": folder, "mode": run.mode, "score": best[key],
            "per_class": best.get(f"{key}_per_class", {}), "epochs": len(run.epochs), "best_epoch": best["epoch"],
            "minutes": sum(r.get("seconds") or 0 for r in run.records) / 60,
            "config": {k: v for k, v in _flat(to_dict(run.cfg)).items() if not k.startswith(IGNORED_PREFIXES)}}


def _mean_std(values: list, spec: str = ".4f") -> str:
    """Over the folds that have a value (a multiclass class absent from a fold's maps has None)."""
    values = [v for v in values if v is not None]
    return f"{statistics.fmean(values):{spec}} ± {statistics.pstdev(values):{spec}}" if values else ""


def collect_rows(folders: list[str]) -> list[dict]:
    rows = []
    for name in folders:
        folder = Path(name)
        if (folder / "folds.json").is_file():
            folds = sorted((p for p in folder.glob("fold*") if (p / "metrics.jsonl").is_file()), key=lambda p: p.name)
            if not folds:
                raise UserError(f"{folder / 'folds.json'}: no fold<k>/metrics.jsonl beside it")
            fold_rows = [_run_row(p, f"{folder.name}/{p.name}") for p in folds]
            classes = list(fold_rows[0]["per_class"])
            mean = {"run": f"{folder.name} (mean ± std)", "folder": folder, "mode": fold_rows[0]["mode"],
                    "score": _mean_std([r["score"] for r in fold_rows]),
                    "per_class": {c: _mean_std([r["per_class"].get(c) for r in fold_rows]) for c in classes},
                    "epochs": _mean_std([r["epochs"] for r in fold_rows], ".1f"),
                    "best_epoch": "", "minutes": sum(r["minutes"] for r in fold_rows),
                    "config": {k: v for k, v in fold_rows[0]["config"].items() if k != "data.fold"}}
            rows += fold_rows + [mean]
        else:
            rows.append(_run_row(folder, folder.name))
    _check_one_mode(rows)
    return rows


def _check_one_mode(rows: list[dict]) -> None:
    first = rows[0]
    for row in rows[1:]:
        if row["mode"].name != first["mode"].name:
            raise UserError(f"{first['folder']} is a {first['mode'].name} run ({first['mode'].metric_title}) and "
                            f"{row['folder']} a {row['mode'].name} run ({row['mode'].metric_title}): compare runs "
                            "of one task mode")


def _cells(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    keys = sorted({k for r in rows for k in r["config"]})
    differing = [k for k in keys if len({r["config"].get(k, "") for r in rows}) > 1]
    classes = list(dict.fromkeys(c for r in rows for c in r["per_class"]))
    header = ["run", *differing, f"best val {rows[0]['mode'].metric_title}", "epochs", "best epoch", "minutes",
              *classes]

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else "" if v is None else str(v)

    body = [[r["run"], *[r["config"].get(k, "") for k in differing], fmt(r["score"]), str(r["epochs"]),
             str(r["best_epoch"]), f"{r['minutes']:.1f}", *[fmt(r["per_class"].get(c, "")) for c in classes]]
            for r in rows]
    return header, body


def write_comparison(folders: list[str], out: str | Path) -> list[Path]:
    check_output_folder(out)
    header, body = _cells(collect_rows(folders))
    out = make_folder(out)
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *body])
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>"
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Run comparison</title><style>table{"
            "border-collapse:collapse;font:13px sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}th{"
            f"background:#eee}}</style></head><body>{table}</body></html>")
    paths = [out / "compare.md", out / "compare.csv", out / "compare.html"]
    for path, text in zip(paths, ["\n".join(md) + "\n", buffer.getvalue(), page]):
        write_text_atomic(path, text)
    return paths
