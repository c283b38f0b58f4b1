import numpy as np
import torch

from modes.dice import DiceScore, dice_per_class


def reference_score(preds, truths):
    """Independent computation with plain Python loops over images and classes."""
    per_image = []
    for pred, truth in zip(preds, truths):
        row = []
        for p, t in zip(pred, truth):
            inter = np.logical_and(p, t).sum()
            row.append((2 * inter + 1e-4) / (p.sum() + t.sum() + 1e-4))
        per_image.append(row)
    per_image = np.array(per_image)
    return per_image.mean(0).mean(), per_image.mean(0)


def test_score_matches_hand_computation():
    rng = np.random.default_rng(0)
    preds = rng.random((5, 4, 16, 12)) > 0.6
    truths = rng.random((5, 4, 16, 12)) > 0.5
    preds[0, 1] = False  # empty prediction and empty truth: Dice 1 by the epsilon
    truths[0, 1] = False
    preds[1, 2] = False  # empty prediction, non-empty truth: Dice ~0
    score = DiceScore(4, "cpu")
    for p, t in zip(preds, truths):
        score.update(torch.from_numpy(p), torch.from_numpy(t))
    mean, per_class = score.compute()
    ref_mean, ref_per_class = reference_score(preds, truths)
    assert np.isclose(mean, ref_mean, atol=1e-12) and np.allclose(per_class, ref_per_class, atol=1e-12)


def test_dice_edge_values():
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert dice_per_class(full, full).item() == 1.0
    assert dice_per_class(empty, empty).item() == 1.0
    assert dice_per_class(full, empty).item() < 1e-5
