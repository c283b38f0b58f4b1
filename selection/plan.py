"""From k-fold runs to a plan (`ensemble.py --select`) and from a plan to a submission (`ensemble.py --plan`).

The plan is a YAML file: the members (run folders, weights, and the fold checkpoints each stands for, with their
size, modification time and TTA), per-class thresholds (multilabel), DenseCRF on or off (multiclass), per-class
post-processing in predict.postprocess's form, the --set overrides the selection ran with, and the out-of-fold
table (each run alone, each selection step, thresholds or DenseCRF, post-processing, with the gain of each).
The table is also written as markdown and HTML beside the plan.

Applying a plan soft-votes every member's fold models, each with its member's weight, by the same code as
`ensemble.py --checkpoints` (trainer.inference.write_submission). A checkpoint that changed since
the selection (size or modification time) is an error, not a warning: the weights, thresholds and post-processing
were chosen for the models that were there.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import yaml

from selection import table
from selection.oof import OofImages, collect_runs, fingerprint, predict_missing
from selection.search import postprocess_spec, select
from trainer.export import export_checkpoint
from trainer.inference import load_members, write_submission
from trainer.runtime import setup_runtime
from utils.cli import check_threshold
from utils.config import CrfConfig, PostprocessOps, check_postprocess, parse_section, read_yaml
from utils.errors import UserError
from utils.files import atomic_folder, write_text_atomic

PLAN_VERSION = 1


def check_plan_out(out) -> Path:
    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise UserError(f"--out {out}: a plan is a YAML file (PLAN.yaml); its tables go beside it as .md and .html")
    return out


def make_plan(folders: list, out, steps: int = 10, min_sizes: list[int] | None = None, crf: bool = True,
              overrides: list[str] = (), num_workers: int = 2, progress: bool = True) -> dict:
    """Out-of-fold predictions (cached), the search, and the plan with its tables written to `out`."""
    out, overrides = check_plan_out(out), list(overrides)
    runs = collect_runs(folders, overrides)
    predicted, reused = predict_missing(runs, overrides, num_workers, progress)
    print(f"out-of-fold predictions: {predicted} images predicted, {reused} read from the cache")
    reference = runs[0].cfg
    runtime = setup_runtime(reference.trainer)
    oof = OofImages(runs, progress)
    names = [run.name for run in runs]
    crf_params = (reference.predict.crf or CrfConfig()) if crf and oof.task.mode.metric == "miou" else None
    selection = select(oof, names, runtime.device, steps, min_sizes, crf_params, reference.trainer.threshold, progress)
    plan = {
        "version": PLAN_VERSION,
        "task": {"format": reference.task.format, "mode": reference.task.mode, "classes": list(oof.classes)},
        "overrides": overrides,
        "members": [{"run": run.name, "weight": int(w), "checkpoints": [
            {"path": str(f.checkpoint), "fold": f.fold, "tta": f.cfg.predict.tta, **f.fingerprint}
            for _, f in sorted(run.folds.items())]} for run, w in zip(runs, selection.weights) if w > 0],
        "thresholds": None if selection.thresholds is None else dict(zip(oof.classes, selection.thresholds)),
        "crf": None if selection.crf is None else dataclasses.asdict(selection.crf),
        "postprocess": postprocess_spec(selection),
        "out_of_fold": {"metric": selection.metric, "images": len(oof), "folds": sorted(runs[0].folds),
                        "score": selection.score, "runs": dict(zip(names, selection.alone)),
                        "table": selection.rows},
    }
    write_plan(plan, out)
    return plan


def write_plan(plan: dict, out: Path) -> None:
    write_text_atomic(out, yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
    write_text_atomic(out.with_suffix(".md"), table.markdown(plan))
    write_text_atomic(out.with_suffix(".html"), table.html_page(plan))


def read_plan(path) -> dict:
    """A plan file, checked so that a hand-edited or foreign file is one line naming the plan and the key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: plan not found (write one with ensemble.py --select RUN ... --out {path})")
    plan = read_yaml(path)
    if plan.get("version") != PLAN_VERSION:
        raise UserError(f"{path}: not a plan of this framework (version {plan.get('version')!r}, expected "
                        f"{PLAN_VERSION}); write one with ensemble.py --select")
    task = plan.get("task")
    if not isinstance(task, dict) or not isinstance(task.get("classes"), list) or not task["classes"]:
        raise UserError(f"{path}: task.classes: expected the list of class names")
    classes = task["classes"]
    overrides = plan.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"{path}: overrides: expected a list of KEY.PATH=VALUE strings")
    members = plan.get("members")
    if not isinstance(members, list) or not members:
        raise UserError(f"{path}: members: expected a list of runs with their weights and checkpoints")
    for i, m in enumerate(members):
        where = f"{path}: members[{i}]"
        if not isinstance(m, dict) or not isinstance(m.get("run"), str):
            raise UserError(f"{where}: expected a mapping with run, weight and checkpoints")
        weight = m.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
            raise UserError(f"{where}.weight: expected a positive number, got {weight!r}")
        checkpoints = m.get("checkpoints")
        if not isinstance(checkpoints, list) or not checkpoints:
            raise UserError(f"{where}.checkpoints: expected the list of fold checkpoints")
        for j, c in enumerate(checkpoints):
            if not (isinstance(c, dict) and isinstance(c.get("path"), str) and c.get("tta") in ("none", "hflip")
                    and all(isinstance(c.get(k), int) and not isinstance(c.get(k), bool)
                            for k in ("size", "mtime_ns"))):
                raise UserError(f"{where}.checkpoints[{j}]: expected path, tta (none or hflip), size and mtime_ns")
    if len({len(m["checkpoints"]) for m in members}) > 1:
        raise UserError(f"{path}: members: every run must hold the same folds (the weights are per fold model)")
    thresholds = plan.get("thresholds")
    if thresholds is not None:
        if not isinstance(thresholds, dict) or set(thresholds) != set(classes):
            raise UserError(f"{path}: thresholds: expected one threshold per class of task.classes")
        for name, value in thresholds.items():
            check_threshold(value, f"{path}: thresholds.{name}")
    plan["crf"] = parse_section(CrfConfig | None, plan.get("crf"), "crf", str(path))
    spec = parse_section(dict[str, PostprocessOps], plan.get("postprocess") or {}, "postprocess", str(path))
    check_postprocess(spec, classes, task.get("mode") == "multiclass", f"{path}: postprocess")
    plan["postprocess"] = spec
    return plan


def apply_plan(path, out, data_root: str | None = None, overrides: list[str] = (), num_workers: int = 2,
               progress: bool = True) -> str:
    """Write the submission of a plan to `out`; returns the line to print."""
    plan = read_plan(path)
    check_unchanged(plan, path)  # every checkpoint before any model is loaded
    crf = plan["crf"]
    overrides = [*plan.get("overrides", []), *overrides, f"predict.crf={json.dumps(_plain(crf))}"]
    if data_root:
        overrides.append(f"data.root={data_root}")
    members, runtime = [], None
    for m in plan["members"]:
        # each fold model gets its run's weight: the runs share their folds, so every run's share of the mean is
        # its weight's, and a plan of one run is exactly `ensemble.py --checkpoints RUN`
        for c in m["checkpoints"]:
            loaded, first = load_members([Path(c["path"])], [float(m["weight"])], overrides, c["tta"])
            members += loaded
            runtime = runtime or first
    task = members[0].task
    if task.classes != plan["task"]["classes"]:
        raise UserError(f"{path}: the members predict other classes than the plan's task.classes")
    thresholds = plan.get("thresholds")
    if thresholds is not None:
        thresholds = torch.tensor([float(thresholds[c]) for c in task.classes])
    elif task.mode.thresholded:
        thresholds = torch.full((len(task.classes),), members[0].cfg.trainer.threshold)
    root = data_root or members[0].cfg.data.root
    task.submission.test_samples(root)  # the test set --check expects: found, not empty, names unique
    count = write_submission(members, task, root, out, runtime, thresholds=thresholds,
                             postprocess=plan["postprocess"], num_workers=num_workers, progress=progress)
    return (f"wrote {out}: {count} images, plan {path}: {len(plan['members'])} runs, {len(members)} models, "
            f"post-processing for {len(plan['postprocess'])} classes")


def check_unchanged(plan: dict, path) -> None:
    """The weights, thresholds and post-processing were chosen for the models that were there: a changed one is an
    error naming it."""
    for m in plan["members"]:
        for c in m["checkpoints"]:
            if fingerprint(Path(c["path"])) != {"size": c["size"], "mtime_ns": c["mtime_ns"]}:
                raise UserError(f"{path}: {c['path']} changed since the selection (size or modification time); "
                                "run ensemble.py --select again")


def export_plan(path, out_dir, opset: int | None = None, exporter: str = "auto", simplify: bool = False) -> str:
    """Every fold model of a plan exported to ONNX into `out_dir`, beside `out_dir/plan.yaml`: the same plan whose
    checkpoints are those files, so that `ensemble.py --plan out_dir/plan.yaml` runs it through ONNX Runtime.
    Returns the line to print."""
    plan = read_plan(path)
    check_unchanged(plan, path)
    out_dir = Path(out_dir)
    written = read_yaml(Path(path))  # the file as saved (read_plan parses crf and post-processing into objects)
    written["exported_from"] = str(path)
    count = 0
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(out_dir) as tmp:
        for i, member in enumerate(written["members"]):
            for c in member["checkpoints"]:
                name = f"{i}-{Path(member['run']).name}-{Path(c['path']).parent.name}.onnx"
                _, result = export_checkpoint(c["path"], tmp / name, opset, overrides=plan["overrides"],
                                              exporter=exporter, simplify=simplify)
                print(f"exported {c['path']} -> {out_dir / name} ({result.exporter}, ONNX Runtime within "
                      f"{result.max_abs_diff:.1e} of PyTorch)")
                c.update(path=str(out_dir / name), **fingerprint(tmp / name))  # a rename keeps size and mtime
                count += 1
        write_plan(written, tmp / "plan.yaml")
    return (f"wrote {out_dir}: {count} ONNX models and plan.yaml (run it with ensemble.py --plan "
            f"{out_dir / 'plan.yaml'})")


def _plain(crf: CrfConfig | None):
    return None if crf is None else dataclasses.asdict(crf)
