"""The out-of-fold table of a plan as markdown and as a static HTML page (every value escaped)."""
from __future__ import annotations

import html


def _score(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _gain(value) -> str:
    return "" if value is None else f"{value:+.4f}"


def _member_rows(plan: dict) -> list[list[str]]:
    return [[m["run"], str(m["weight"]), ", ".join(str(c["fold"]) for c in m["checkpoints"]),
             ", ".join(sorted({c["tta"] for c in m["checkpoints"]}))] for m in plan["members"]]


def _step_rows(plan: dict) -> list[list[str]]:
    return [[r["step"], r["what"], _score(r["score"]), _gain(r["gain"])] for r in plan["out_of_fold"]["table"]]


def _title(plan: dict) -> str:
    oof = plan["out_of_fold"]
    return (f"out-of-fold {oof['metric']} over {oof['images']} images of folds "
            f"{', '.join(map(str, oof['folds']))}: {oof['score']:.4f}")


def markdown(plan: dict) -> str:
    def table(header, rows):
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in rows]

    lines = ["# Selection plan", "", _title(plan), "", "## Steps", ""]
    lines += table(["step", "what", "OOF score", "gain"], _step_rows(plan))
    lines += ["", "## Members", ""]
    lines += table(["run", "weight", "folds", "TTA"], _member_rows(plan))
    return "\n".join(lines) + "\n"


def html_page(plan: dict) -> str:
    def table(header, rows):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Selection plan</title>"
            f"<style>{style}</style></head><body><h1>Selection plan</h1><p>{html.escape(_title(plan))}</p>"
            f"<h2>Steps</h2>{table(['step', 'what', 'OOF score', 'gain'], _step_rows(plan))}"
            f"<h2>Members</h2>{table(['run', 'weight', 'folds', 'TTA'], _member_rows(plan))}</body></html>\n")


def text(plan: dict) -> str:
    """The steps as aligned text for the terminal."""
    rows = [["step", "what", "OOF score", "gain"]] + _step_rows(plan)
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(4)]
    return "\n".join("  ".join(cell[:60].ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
