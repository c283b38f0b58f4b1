"""Losses by name, built from segmentation-models-pytorch's multilabel losses, combined as a weighted sum.

BCE + Dice was the best published loss for this task; every term takes its smp keyword arguments in `params`.
"""
from __future__ import annotations

import difflib

from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from utils.config import LossConfig
from utils.errors import ConfigError


def _focal_tversky(mode, **params):
    # Focal Tversky (Abraham & Khan 2019): FN weighted over FP, (1 - TI) ** 0.75; smp's TverskyLoss has every knob
    params = {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, **params}
    return smp_losses.TverskyLoss(mode, **params)


LOSSES = {
    "bce": lambda mode, **p: smp_losses.SoftBCEWithLogitsLoss(**p),
    "dice": smp_losses.DiceLoss,
    "jaccard": smp_losses.JaccardLoss,
    "iou": smp_losses.JaccardLoss,
    "focal": smp_losses.FocalLoss,
    "tversky": smp_losses.TverskyLoss,
    "focal_tversky": _focal_tversky,
    "lovasz": smp_losses.LovaszLoss,
}


class WeightedSum(nn.Module):
    def __init__(self, terms: list[tuple[str, float, nn.Module]]):
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.terms = nn.ModuleList(module for _, _, module in terms)

    def forward(self, logits, target):
        target = target.to(logits.dtype)
        return sum(w * term(logits, target) for w, term in zip(self.weights, self.terms))


def build_loss(cfg: LossConfig, mode: str) -> nn.Module:
    if not cfg.terms:
        raise ConfigError("loss.terms: at least one loss term is needed")
    terms = []
    for i, term in enumerate(cfg.terms):
        key = f"loss.terms[{i}]"
        name = term.name.lower()
        if name not in LOSSES:
            close = difflib.get_close_matches(name, LOSSES, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(LOSSES)})"
            raise ConfigError(f"{key}.name: unknown loss {term.name!r}{hint}")
        try:
            module = LOSSES[name](mode, **term.params)
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"{key}.params: {' '.join(str(e).split())}") from None
        terms.append((name, term.weight, module))
    return WeightedSum(terms)
