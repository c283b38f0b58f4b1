"""Does the cross-validated plan beat the runs it was chosen from on images none of them saw? (issue #19)

A synthetic hand-bone set is generated and some of its labelled persons are moved out: their images become the test
folder (test/DCM/IDxxx), their polygons are kept outside the data root as the hidden truth. Then, as a user would,
in fresh processes:

    python train.py --config configs/demo.yaml --folds all --out A ...            (recipe A: BCE + Dice)
    python train.py --config configs/demo.yaml --folds all --out B ...            (recipe B: BCE alone, lr 3e-3)
    python ensemble.py --checkpoints A --out A.csv                                 (each run's own fold ensemble)
    python ensemble.py --select A B --out plan.yaml
    python ensemble.py --plan plan.yaml --out plan.csv

and every CSV is scored against the hidden truth by a scorer written here (the competition's RLE decoded with
numpy, the polygons filled with OpenCV): mean Dice over test images and classes.

    python benchmarks/selection_holdout.py [--ids 16] [--hidden 4] [--size 256] [--folds 3] [--epochs 10]
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tasks.handbone.synthetic import HAND_BONE_CLASSES, generate  # noqa: E402

RECIPES = {"A": [], "B": ["loss.terms=[{name: bce, weight: 1.0}]", "optimizer.lr=3e-3"]}


def hide_persons(root: Path, truth: Path, count: int) -> list[str]:
    """Move the last `count` labelled persons to the test folder; their JSON goes to `truth`."""
    persons = sorted(p.name for p in (root / "train" / "DCM").iterdir())[-count:]
    for person in persons:
        shutil.move(root / "train" / "DCM" / person, root / "test" / "DCM" / person)
        shutil.move(root / "train" / "outputs_json" / person, truth / person)
    return persons


def decode_rle(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """The competition's run-length code: 1-based start and length pairs over the row-major pixels."""
    flat = np.zeros(shape[0] * shape[1], bool)
    numbers = np.asarray(rle.split(), np.int64)
    for start, length in zip(numbers[0::2] - 1, numbers[1::2]):
        flat[start:start + length] = True
    return flat.reshape(shape)


def score(csv_path: Path, root: Path, truth: Path) -> float:
    """Mean Dice over (test image, class), the truth filled from the hidden JSON polygons."""
    rows: dict[tuple[str, str], str] = {}
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            rows[row["image_name"], row["class"]] = row["rle"]
    dices = []
    for json_path in sorted(truth.rglob("*.json")):
        png = root / "test" / "DCM" / json_path.parent.name / f"{json_path.stem}.png"
        shape = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE).shape
        polygons = {a["label"]: np.asarray(a["points"], np.int32) for a in json.loads(json_path.read_text())[
            "annotations"]}
        for cls in HAND_BONE_CLASSES:
            want = np.zeros(shape, np.uint8)
            cv2.fillPoly(want, [polygons[cls]], 1)
            got = decode_rle(rows.get((png.name, cls), ""), shape)
            inter, total = np.logical_and(want, got).sum(), want.sum() + got.sum()
            dices.append(2 * inter / total if total else 1.0)
    return float(np.mean(dices))


def run(cmd: list) -> float:
    cmd = [str(c) for c in cmd]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ids", type=int, default=16, help="labelled synthetic persons (2 images each), hidden included")
    p.add_argument("--hidden", type=int, default=4, help="persons moved to the hidden test set")
    p.add_argument("--size", type=int, default=256, help="synthetic image size (px)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="selection_holdout_"))
    root = generate(work / "hands", ids=args.ids, test_ids=0, size=args.size, seed=args.seed, progress=False)
    (root / "test" / "DCM").mkdir(parents=True, exist_ok=True)
    (work / "truth").mkdir()
    hidden = hide_persons(root, work / "truth", args.hidden)
    python, common = sys.executable, ["--data", root, "--no-progress"]
    sets = [f"data.root={root}", "data.synthetic=null", f"data.cache_dir={work / 'cache'}",
            f"data.n_splits={args.folds}", f"trainer.epochs={args.epochs}"]
    seconds = {}
    for name, extra in RECIPES.items():
        overrides = [x for s in sets + extra for x in ("--set", s)]
        seconds[f"train {name}"] = run([python, "train.py", "--config", "configs/demo.yaml", "--folds", "all",
                                        *overrides, "--out", work / name, "--no-progress"])
        seconds[f"fold ensemble {name}"] = run([python, "ensemble.py", "--checkpoints", work / name, *common,
                                                "--out", work / f"{name}.csv"])
    seconds["select"] = run([python, "ensemble.py", "--select", *(work / n for n in RECIPES), "--out",
                             work / "plan.yaml"])
    seconds["plan"] = run([python, "ensemble.py", "--plan", work / "plan.yaml", *common, "--out",
                           work / "plan.csv"])
    print(f"\n{args.ids - args.hidden} labelled persons in {args.folds} folds, {args.hidden} hidden persons "
          f"({', '.join(hidden)}, {2 * args.hidden} images) of {args.size} px, {args.epochs} epochs per fold; "
          f"work folder {work}")
    print("| submission | hidden test Dice |\n|---|---:|")
    for name in [*RECIPES, "plan"]:
        label = f"run {name}'s fold ensemble" if name in RECIPES else "--select then --plan"
        print(f"| {label} | {score(work / f'{name}.csv', root, work / 'truth'):.4f} |")
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))


if __name__ == "__main__":
    main()
