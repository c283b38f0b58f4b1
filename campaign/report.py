"""The campaign table (markdown, CSV, HTML) sorted by the validation score (Dice, or mIoU for a multiclass task),
one column per swept key, and Optuna's plots.

The three table formats are written by hand: a few lines each, where pandas would add an unpinned dependency
and tabulate another one.
"""
from __future__ import annotations

import csv
import html
import io
import sys
from pathlib import Path

from optuna.trial import TrialState

from campaign import study as studies
from campaign.plan import DUPLICATE_ATTR, QUEUE_ATTR
from utils.errors import UserError
from utils.files import check_output_folder, make_folder, write_text_atomic

PLOTS = {"history": "plot_optimization_history", "importance": "plot_param_importances",
         "parallel": "plot_parallel_coordinate"}


def rows(study) -> tuple[list[str], list[dict]]:
    """The table's columns and one row per trial that ran (duplicates that stood down are left out)."""
    campaign = study.user_attrs.get(studies.CAMPAIGN_ATTR, {})
    keys = list(campaign.get("space", {})) if campaign.get("kind") == "space" else ["config"]
    metrics = {t.user_attrs["metric"] for t in study.get_trials(deepcopy=False) if "metric" in t.user_attrs}
    score = f"val_{metrics.pop()}" if len(metrics) == 1 else "val_score"  # Dice (hand bones) or mIoU (trash)
    out = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(DUPLICATE_ATTR) is not None or t.state in (TrialState.WAITING,):
            continue
        value = t.value if t.state == TrialState.COMPLETE else max(t.intermediate_values.values(), default=None)
        row = {"trial": t.number, "state": t.state.name.lower(), score: value,
               "epochs": t.user_attrs.get("epochs"), "run_dir": t.user_attrs.get("run_dir", "")}
        if campaign.get("kind") == "queue":
            row["config"] = t.user_attrs.get("queue_name", t.user_attrs.get(QUEUE_ATTR))
        else:
            row.update({key: t.params.get(key) for key in keys})
        if "failed_trial" in t.system_attrs:
            row["state"] += f" (retry of {t.system_attrs['failed_trial']})"
        out.append(row)
    out.sort(key=lambda r: (r[score] is None, -(r[score] or 0.0), r["trial"]))
    return ["trial", *keys, score, "state", "epochs", "run_dir"], out


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(columns: list[str], table: list[dict], title: str) -> str:
    lines = [f"# Campaign {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]).replace("|", "\\|") for c in columns) + " |" for r in table]
    return "\n".join(lines) + "\n"


def csv_text(columns: list[str], table: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if r[c] is None else r[c]) for c in columns} for r in table)
    return buffer.getvalue()


def html_text(columns: list[str], table: list[dict], title: str, plots: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r[c]))}</td>" for c in columns) + "</tr>" for r in table)
    links = " ".join(f'<a href="{html.escape(p)}">{html.escape(p)}</a>' for p in plots)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
            f"<h1>Campaign {html.escape(title)}</h1><p>{links}</p><table><tr>{head}</tr>{body}</table></body></html>\n")


def write_plots(study, out_dir: Path) -> list[str]:
    """Optuna's plots as HTML beside the table; one that cannot be drawn is skipped with a named warning."""
    import optuna.visualization as vis

    written = []
    for name, function in PLOTS.items():
        path = out_dir / f"plot_{name}.html"
        try:
            figure = getattr(vis, function)(study)
            figure.write_html(str(path), include_plotlyjs="directory")  # one plotly.min.js shared by the plots
            written.append(path.name)
        except Exception as e:  # too few trials, no swept parameter, ...: the table is still worth having
            print(f"warning: skipped the {name} plot ({' '.join(str(e).split())[:200]})", file=sys.stderr)
    return written


def write_report(name: str, storage: str | None, out: str | None) -> Path:
    out_dir = check_output_folder(Path(out) if out else Path("runs") / name, "--out" if out else "")
    if storage is None:
        if not (out_dir / "study.db").is_file():
            raise UserError(f"{out_dir / 'study.db'}: no such study database (give --storage URL for another one)")
        storage = studies.default_storage(out_dir)
    study = studies.load(name, studies.open_storage(storage))
    columns, table = rows(study)
    if not table:
        raise UserError(f"study {name!r}: no trial has run yet")
    make_folder(out_dir)
    plots = write_plots(study, out_dir)
    write_text_atomic(out_dir / "report.md", markdown(columns, table, name))
    write_text_atomic(out_dir / "report.csv", csv_text(columns, table))
    write_text_atomic(out_dir / "report.html", html_text(columns, table, name, plots))
    print(markdown(columns, table, name))
    print(f"report: {out_dir}/report.{{md,csv,html}}" + (f", plots: {', '.join(plots)}" if plots else ""))
    return out_dir
