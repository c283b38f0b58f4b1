"""The search on out-of-fold predictions: which runs to ensemble with what weights, then (multilabel) per-class
thresholds or (multiclass) DenseCRF, then per-class post-processing, each kept only where it raises the score.

- Members: greedy forward selection with replacement (Caruana et al., 2004, "Ensemble selection from libraries of
  models"): start from the best run alone, then repeatedly add the run (again, possibly) whose addition raises the
  out-of-fold score most; stop after `steps` additions or when no addition raises it. A run's weight is the number
  of times it was added. Ties go to the ensemble with fewer distinct runs, then to the run given first.
- Scores are the task mode's metric at each image's own size, from the saved model-resolution maps upsampled
  exactly as at inference (modes.fullsize): multilabel, Dice per image and class at trainer.threshold, mean over
  images then classes; multiclass, mIoU of one confusion matrix over all out-of-fold images.
- Every candidate of a step is scored in one pass over the images (each image's maps read once per pass).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from modes.crf import dense_crf
from modes.dice import DICE_EPS
from modes.fullsize import FullSizeProbs, bits_count, dice_counts, one_thread, unpack_box
from modes.miou import scores as miou_scores
from modes.multiclass import mean_full_size
from modes.postprocess import Postprocess, as_dict, clean_mask, describe
from selection.oof import OofImages
from trainer.thresholds import BINS, per_threshold_dice_boxes
from utils.config import CrfConfig, PostprocessOps

EPS = 1e-12  # a change must raise the score by more than float noise to be kept
MIN_SIZE_FRACTIONS = (1e-4, 5e-4, 2e-3, 1e-2)  # default --min-sizes: these fractions of the median image area


@dataclass
class Selection:
    """What the search chose and the table of how it got there (rows: step, what, score, gain)."""
    metric: str
    weights: list[int]  # per run, in the order given
    per_class: list[float] = field(default_factory=list)  # the members' score per class (before refinements)
    thresholds: list[float] | None = None  # multilabel: per class
    crf: CrfConfig | None = None  # multiclass: DenseCRF on (its parameters) or off
    postprocess: dict = field(default_factory=dict)  # {class: PostprocessOps}, only where it raised the score
    alone: list[float] = field(default_factory=list)  # each run's own out-of-fold score
    rows: list[dict] = field(default_factory=list)
    score: float = 0.0  # the final out-of-fold score


def row(step: str, what: str, score: float | None = None, gain: float | None = None) -> dict:
    """One line of the table (plain floats: the plan is YAML)."""
    return {"step": step, "what": what, "score": None if score is None else float(score),
            "gain": None if gain is None else float(gain)}


def default_min_sizes(oof: OofImages) -> list[int]:
    """Component sizes to try, from the median image area (the same fractions fit 128 px and 2048 px images)."""
    areas = sorted(h * w for h, w in (oof.size(n) for n in range(len(oof))))
    median = areas[len(areas) // 2]
    return sorted({max(2, round(f * median)) for f in MIN_SIZE_FRACTIONS})


def postprocess_candidates(min_sizes: list[int]) -> list[PostprocessOps]:
    """Index 0 is 'none'; the others from simplest on (ties keep the simpler one)."""
    components = [PostprocessOps()] + [PostprocessOps(largest_component=True)] + [
        PostprocessOps(min_size=n) for n in sorted(min_sizes)]
    return [PostprocessOps(c.largest_component, c.min_size, fill) for c in components for fill in (False, True)]


def greedy(scorer, names: list[str], max_steps: int) -> tuple[list[int], list[dict], list[float], list[float]]:
    """Caruana's forward selection with replacement; returns (weights, table rows, each run's score alone, the
    chosen ensemble's score per class)."""
    n_runs = len(names)
    counts = np.zeros(n_runs, np.int64)
    current, rows, alone, per_class = -math.inf, [], [], []
    for step in range(max_steps):
        candidates = [counts + np.eye(n_runs, dtype=np.int64)[r] for r in range(n_runs)]
        # a run added to an ensemble of itself alone leaves the mean unchanged: its score is the current one
        same = [step > 0 and np.count_nonzero(c) == 1 and np.count_nonzero(counts) == 1 for c in candidates]
        todo = [c for c, s in zip(candidates, same) if not s]
        if not todo:
            break
        scored = iter(scorer.ensembles(todo, desc=f"selection step {step + 1}"))
        outcomes = [(current, per_class) if s else next(scored) for s in same]
        results = [score for score, _ in outcomes]
        if step == 0:
            alone = results
            rows += [row("run", f"{name} alone", score) for name, score in zip(names, results)]
        best = min(range(n_runs), key=lambda r: (-round(results[r], 12), np.count_nonzero(candidates[r]), r))
        if step > 0 and results[best] <= current + EPS:
            break
        gain = None if step == 0 else results[best] - current
        counts, (current, per_class) = candidates[best], outcomes[best]
        weights = ", ".join(f"{names[r]} x{int(counts[r])}" for r in np.flatnonzero(counts))
        rows.append(row(f"ensemble {step + 1}", f"add {names[best]}: {weights}", current, gain))
    return counts.tolist(), rows, alone, per_class


class DiceSearch:
    """Multilabel: members at trainer.threshold, then per-class thresholds, then per-class post-processing."""

    def __init__(self, oof: OofImages, device, threshold: float, progress: bool = True):
        self.oof, self.device, self.threshold, self.progress = oof, device, threshold, progress
        self.classes = oof.classes

    def _images(self, desc: str):
        return tqdm(range(len(self.oof)), desc=desc, unit="img", disable=not self.progress, leave=False)

    def _full(self, n: int, maps: dict, weights) -> FullSizeProbs:
        return FullSizeProbs([(maps[r], float(weights[r])) for r in np.flatnonzero(weights)], self.oof.size(n))

    def ensembles(self, weight_vectors: list, desc: str = "score") -> list[tuple[float, list[float]]]:
        """(score, Dice per class) of each weighted ensemble, one pass over the images."""
        used = sorted({int(r) for w in weight_vectors for r in np.flatnonzero(w)})
        sums = torch.zeros(len(weight_vectors), len(self.classes), dtype=torch.float64)
        for n in self._images(desc):
            maps, bits = self.oof.maps(n, used, self.device), self.oof.truth_bits(n)
            for k, w in enumerate(weight_vectors):
                inter, area, true = dice_counts(self._full(n, maps, w), self.threshold, bits)
                sums[k] += (2 * inter + DICE_EPS) / (area + true + DICE_EPS)
        per_class = sums / max(len(self.oof), 1)
        return [(float(p.mean()), p.tolist()) for p in per_class]

    def refine(self, selection: Selection, min_sizes: list[int], crf: CrfConfig | None) -> None:
        weights = np.array(selection.weights)
        tuned = self._tuned_thresholds(weights)
        selection.score = float(self._thresholds_and_postprocess(weights, tuned, min_sizes, selection))

    def _tuned_thresholds(self, weights) -> list[float]:
        """Per class, the threshold of the best pooled out-of-fold Dice on the 0.01 grid (trainer/thresholds.py's
        histograms); confirmed against trainer.threshold by exact counts in the next pass."""
        dice = torch.zeros(len(self.classes), BINS, dtype=torch.float64)
        used = [int(r) for r in np.flatnonzero(weights)]
        for n in self._images("thresholds"):
            dice += per_threshold_dice_boxes(self._full(n, self.oof.maps(n, used, self.device), weights),
                                             self.oof.truth_bits(n))
        best = dice[:, 1:].argmax(1) + 1  # bin 0 (threshold 0) would mark every pixel
        return [round(int(b) / BINS, 4) for b in best]

    def _thresholds_and_postprocess(self, weights, tuned: list[float], min_sizes: list[int],
                                    selection: Selection) -> float:
        """One pass over the images: per class the exact Dice of every post-processing candidate on the masks at
        the tuned threshold and at trainer.threshold (the histogram's bins may differ from `p > t` by a float
        rounding, so a threshold is kept only where the exact counts say it raises the score); then per class the
        threshold, and the post-processing of the best Dice, each kept only where it raises it. Classes are
        scored independently, so per-class choices add up."""
        candidates = postprocess_candidates(min_sizes)
        default = [self.threshold] * len(self.classes)
        variants = [default] if tuned == default else [default, tuned]
        sums = np.zeros((len(variants), len(self.classes), len(candidates)))
        used = [int(r) for r in np.flatnonzero(weights)]
        for n in self._images("thresholds and post-processing"):
            bits = self.oof.truth_bits(n)
            true = bits_count(bits)
            full = self._full(n, self.oof.maps(n, used, self.device), weights)
            for v, thresholds in enumerate(variants):
                with one_thread(full.device):
                    masks = full.masks(torch.tensor(thresholds, dtype=torch.float32).to(full.device))
                for c, item in enumerate(masks):
                    if item is None:
                        sums[v, c] += DICE_EPS / (true[c] + DICE_EPS)
                        continue
                    if v and thresholds[c] == default[c]:
                        sums[v, c] = np.nan  # unchanged: variant 0 holds it
                        continue
                    box, crop = item[0], item[1].cpu().numpy()
                    truth = unpack_box(bits[c], box)
                    for k, ops in enumerate(candidates):
                        mask = clean_mask(crop, ops) if k else crop
                        inter, area = np.count_nonzero(mask & truth), np.count_nonzero(mask)
                        sums[v, c, k] += (2 * inter + DICE_EPS) / (area + true[c] + DICE_EPS)
        mean = sums / max(len(self.oof), 1)
        members = float(mean[0, :, 0].mean())
        thresholds, threshold_rows, chosen_rows, at_threshold, final = [], [], [], [], []
        for c, name in enumerate(self.classes):
            v = 1 if len(variants) > 1 and mean[1, c, 0] > mean[0, c, 0] + EPS else 0
            thresholds.append(variants[v][c])
            at_threshold.append(mean[v, c, 0])
            if v:
                threshold_rows.append(row(f"threshold {name}", f"{self.threshold:g} -> {tuned[c]:g} (class Dice "
                                          f"{mean[0, c, 0]:.4f} -> {mean[1, c, 0]:.4f})", None,
                                          (mean[1, c, 0] - mean[0, c, 0]) / len(self.classes)))
            k = int(np.argmax(mean[v, c]))
            if mean[v, c, k] > mean[v, c, 0] + EPS:
                selection.postprocess[name] = candidates[k]
                chosen_rows.append(row(f"post-process {name}", f"{describe(candidates[k])} (class Dice "
                                       f"{mean[v, c, 0]:.4f} -> {mean[v, c, k]:.4f})", None,
                                       (mean[v, c, k] - mean[v, c, 0]) / len(self.classes)))
            else:
                k = 0
            final.append(mean[v, c, k])
        selection.thresholds = thresholds
        score, final = float(np.mean(at_threshold)), float(np.mean(final))
        selection.rows += threshold_rows
        selection.rows.append(row("thresholds", f"{len(threshold_rows)} of {len(self.classes)} classes off "
                                  f"{self.threshold:g}", score, score - members))
        selection.rows += chosen_rows
        selection.rows.append(row("post-processing", f"{len(chosen_rows)} of {len(self.classes)} classes "
                                  f"(tried: {', '.join(describe(o) for o in candidates[1:])})", final, final - score))
        return final


class MiouSearch:
    """Multiclass: members by argmax mIoU, then DenseCRF on or off, then per-class post-processing."""

    def __init__(self, oof: OofImages, device, threshold: float, progress: bool = True):
        self.oof, self.device, self.progress = oof, device, progress
        self.classes = oof.classes
        self.n = len(self.classes)

    def _images(self, desc: str):
        return tqdm(range(len(self.oof)), desc=desc, unit="img", disable=not self.progress, leave=False)

    def _confusion(self, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
        index = truth.reshape(-1).astype(np.int64) * self.n + pred.reshape(-1)
        return np.bincount(index, minlength=self.n * self.n).reshape(self.n, self.n)

    def _score(self, matrix: np.ndarray) -> tuple[float, list[float]]:
        miou, iou, _ = miou_scores(torch.from_numpy(matrix))
        return miou, iou

    def _labels(self, n: int, ups: dict, weights, crf: CrfConfig | None) -> np.ndarray:
        """The argmax label map of the weighted mean (then DenseCRF), as the trash submission writer makes it."""
        mean = mean_full_size([(ups[r], float(weights[r])) for r in np.flatnonzero(weights)], self.oof.size(n))
        if crf is not None:
            image = self.oof.task.layout.read_image(self.oof.sample(n).image)
            mean = torch.from_numpy(dense_crf(image, mean.cpu().numpy(), crf.iterations, crf.gaussian_sxy,
                                              crf.gaussian_compat, crf.bilateral_sxy, crf.bilateral_srgb,
                                              crf.bilateral_compat))
        return mean.argmax(0).to(torch.uint8).cpu().numpy()

    def _upsampled(self, n: int, runs: list[int]) -> dict:
        """Each run's map at the image's own size, once per image (mean_full_size passes full-size parts through
        unchanged, so every candidate's mean has the values the submission path computes)."""
        size = self.oof.size(n)
        return {r: mean_full_size([(p, 1.0)], size) for r, p in self.oof.maps(n, runs, self.device).items()}

    def ensembles(self, weight_vectors: list, desc: str = "score", crf: CrfConfig | None = None,
                  postprocess: Postprocess | None = None) -> list[tuple[float, list[float]]]:
        used = sorted({int(r) for w in weight_vectors for r in np.flatnonzero(w)})
        matrices = np.zeros((len(weight_vectors), self.n, self.n), np.int64)
        for n in self._images(desc):
            ups, truth = self._upsampled(n, used), np.asarray(self.oof.truth_labels(n))
            for k, w in enumerate(weight_vectors):
                labels = self._labels(n, ups, w, crf)
                if postprocess is not None:
                    labels = postprocess.labels(labels)
                matrices[k] += self._confusion(labels, truth)
        return [self._score(m) for m in matrices]

    def refine(self, selection: Selection, min_sizes: list[int], crf: CrfConfig | None) -> None:
        weights, score = np.array(selection.weights), selection.score
        if crf is not None:
            with_crf = self.ensembles([weights], desc="DenseCRF", crf=crf)[0][0]
            keep = with_crf > score + EPS
            selection.rows.append(row("DenseCRF", f"{'on' if keep else 'off'} (mIoU with it {with_crf:.4f})",
                                      with_crf if keep else score, (with_crf - score) if keep else 0.0))
            selection.crf = crf if keep else None
            score = with_crf if keep else score
        selection.score = float(self._postprocess(weights, selection, min_sizes, score))

    def _postprocess(self, weights, selection: Selection, min_sizes: list[int], score: float) -> float:
        """Each (class, operations) measured alone in one pass, as the change it makes to the confusion matrix;
        the best per class where it raises mIoU; the combination is measured again (a class's filled holes may
        take background another class's removal freed) and falls back to the best single change if it is worse."""
        candidates = postprocess_candidates(min_sizes)
        deltas = np.zeros((self.n, len(candidates), self.n, self.n), np.int64)
        base = np.zeros((self.n, self.n), np.int64)
        used = [int(r) for r in np.flatnonzero(weights)]
        for n in self._images("post-processing"):
            labels = self._labels(n, self._upsampled(n, used), weights, selection.crf)
            truth = np.asarray(self.oof.truth_labels(n))
            base += self._confusion(labels, truth)
            present = np.bincount(labels.reshape(-1), minlength=self.n) > 0
            for c in np.flatnonzero(present[1:]) + 1:
                for k, ops in enumerate(candidates[1:], 1):
                    new = Postprocess([ops if j == c else None for j in range(self.n)]).labels(labels)
                    changed = new != labels
                    if changed.any():
                        deltas[c, k] += self._confusion(new[changed], truth[changed])
                        deltas[c, k] -= self._confusion(labels[changed], truth[changed])
        start = self._score(base)[0]
        chosen, rows = {}, []
        for c in range(1, self.n):
            values = [self._score(base + deltas[c, k])[0] for k in range(1, len(candidates))]
            k = int(np.argmax(values)) + 1 if values else 0
            if k and values[k - 1] > start + EPS:
                chosen[c] = (candidates[k], values[k - 1])
                rows.append(row(f"post-process {self.classes[c]}", describe(candidates[k]), None,
                                values[k - 1] - start))
        final = start
        if chosen:
            combined = Postprocess([chosen[c][0] if c in chosen else None for c in range(self.n)])
            final = self.ensembles([weights], desc="post-processing together", crf=selection.crf,
                                   postprocess=combined)[0][0]
            best_c = max(chosen, key=lambda c: chosen[c][1])
            if final < chosen[best_c][1]:  # the changes hurt each other: keep the best one alone
                chosen, final = {best_c: chosen[best_c]}, chosen[best_c][1]
                rows = [r for r in rows if r["step"] == f"post-process {self.classes[best_c]}"]
        for c, (ops, _) in chosen.items():
            selection.postprocess[self.classes[c]] = ops
        selection.rows += rows
        selection.rows.append(row("post-processing", f"{len(chosen)} of {self.n - 1} classes (tried: "
                                  f"{', '.join(describe(o) for o in candidates[1:])})", final, final - score))
        return final


SEARCHES = {"dice": DiceSearch, "miou": MiouSearch}  # by the task mode's metric


def select(oof: OofImages, names: list[str], device, max_steps: int = 10, min_sizes: list[int] | None = None,
           crf: CrfConfig | None = None, threshold: float = 0.5, progress: bool = True) -> Selection:
    """The whole search: members and weights, then the mode's refinements. `crf`: the DenseCRF parameters to try
    (multiclass), None to leave it off."""
    metric = oof.task.mode.metric
    search = SEARCHES[metric](oof, device, threshold, progress)
    weights, rows, alone, per_class = greedy(search, names, max_steps)
    selection = Selection(metric, weights, per_class=per_class, alone=alone, rows=rows,
                          score=next(r["score"] for r in reversed(rows) if r["step"].startswith("ensemble")))
    search.refine(selection, min_sizes or default_min_sizes(oof), crf)
    best = int(np.argmax(alone))
    selection.rows.append(row("final", f"the plan, against the best run alone ({names[best]})", selection.score,
                              selection.score - alone[best]))
    return selection


def postprocess_spec(selection: Selection) -> dict:
    """The chosen post-processing as predict.postprocess writes it."""
    return {name: as_dict(ops) for name, ops in selection.postprocess.items()}
