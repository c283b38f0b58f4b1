"""Cost of `ensemble.py --select` against one validation pass per member, side by side in one run.

  (a) one validation pass per member: every fold model predicts its validation images through the inference path
      (trainer.inference.iter_full_size_probs) and its Dice is counted (modes.fullsize.dice_counts), nothing saved;
  (b) --select, cold: the out-of-fold predictions computed and cached, then the whole search (members, thresholds,
      post-processing);
  (c) --select, warm: the same selection again, every out-of-fold prediction read from the cache.
Two k-fold runs of different recipes are trained first (not timed), on a synthetic hand-bone set.

    python benchmarks/selection_cost.py [--size 512] [--ids 12] [--folds 3] [--image-size 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.cache import open_cache
from modes.fullsize import dice_counts
from selection.oof import collect_runs
from selection.plan import make_plan
from tasks.handbone.synthetic import generate
from trainer.inference import iter_full_size_probs, load_members
from trainer.kfold import train_folds
from trainer.runtime import setup_runtime
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def validation_passes(folders: list[Path]) -> tuple[float, int]:
    """(a): seconds and images of one plain validation pass per fold model."""
    runs = collect_runs(folders, [])
    start, images = time.perf_counter(), 0
    for run in runs:
        for fold in run.folds.values():
            [member], runtime = load_members([fold.checkpoint], [1.0])
            d = fold.cfg.data  # the validation truth at the original size, cached by the trainer already
            truth = open_cache(fold.samples, member.task.layout, None, d.cache_dir, d.cache_workers, False)
            for i, (_, probs) in enumerate(iter_full_size_probs([member], fold.samples, runtime,
                                                                 member.task.layout.read_image, 0, False)):
                dice_counts(probs, fold.cfg.trainer.threshold, truth.mask_bits(i))
                images += 1
    return time.perf_counter() - start, images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="synthetic image size (px)")
    p.add_argument("--ids", type=int, default=12, help="synthetic persons (2 images each)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--image-size", type=int, default=128, help="model input size")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="selection_cost_"))
    root = generate(tmp / "hands", ids=args.ids, test_ids=1, size=args.size, seed=0, progress=False)
    base = [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", f"data.image_size={args.image_size}",
            "data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", f"data.n_splits={args.folds}",
            "model.arch=Unet", "model.encoder=resnet18",
            "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}", "trainer.epochs=1",
            "transforms.gpu=[]", "model.head_prior=0.3"]
    recipes = {"a": [], "b": ["loss.terms=[{name: bce}]", "optimizer.lr=3e-3"]}
    folders = []
    for name, extra in recipes.items():
        cfg = load_config(ROOT / "configs" / "demo.yaml", base + extra)
        train_folds(cfg, tmp / name, list(range(args.folds)), setup_runtime(cfg.trainer), progress=False)
        folders.append(tmp / name)

    plain, images = validation_passes(folders)
    start = time.perf_counter()
    plan = make_plan(folders, tmp / "cold.yaml", num_workers=0, progress=False)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    make_plan(folders, tmp / "warm.yaml", num_workers=0, progress=False)
    warm = time.perf_counter() - start
    cache = sum(f.stat().st_size for d in folders for f in (d / "oof").rglob("*.npz"))
    steps = sum(r["step"].startswith("ensemble") for r in plan["out_of_fold"]["table"])
    print(f"\n{len(folders)} runs x {args.folds} folds, {images} member-images ({args.size} px, model "
          f"{args.image_size} px); selection: {steps} ensemble steps, out-of-fold cache {cache / 1e6:.2f} MB")
    print("| way | wall s | vs (a) |\n|---|---:|---:|")
    for label, seconds in (("(a) one validation pass per member", plain), ("(b) --select, cold", cold),
                           ("(c) --select, warm (cached)", warm)):
        print(f"| {label} | {seconds:.1f} | {seconds / plain:.2f}x |")


if __name__ == "__main__":
    main()
