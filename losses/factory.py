"""Losses by name, built from segmentation-models-pytorch's losses in the task's mode (multilabel or multiclass),
combined as a weighted sum; `ce` (cross-entropy with class weights and label smoothing) is multiclass only.

BCE + Dice was the best published loss for this task; every term takes its smp keyword arguments in `params`.
Void (a layout's ignore_index, e.g. VOC's 255) reaches every term as its `ignore_index`, so void pixels change no
loss; a term that cannot take it is a ConfigError naming the term.
A term named "package.module:Name" or "path/to/file.py:Name" is the user's own: Name(**params) must return a
callable(logits, target) -> scalar tensor.
"""
from __future__ import annotations

import difflib
import inspect

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from torch import nn

from utils.config import LossConfig
from utils.errors import ConfigError
from utils.plugins import call_plugin, is_plugin, load_plugin


def _focal_tversky(mode, **params):
    # Focal Tversky (Abraham & Khan 2019): FN weighted over FP, (1 - TI) ** 0.75; smp's TverskyLoss has every knob
    params = {"alpha": 0.3, "beta": 0.7, "gamma": 0.75, **params}
    return smp_losses.TverskyLoss(mode, **params)


def _bce(mode, **params):
    if mode not in ("multilabel", "binary"):
        raise ValueError("bce scores independent sigmoid classes (task.mode: multilabel); use ce in multiclass mode")
    return smp_losses.SoftBCEWithLogitsLoss(**params)


class CrossEntropy(nn.Module):
    """Multiclass cross-entropy with optional per-class `weight` (a list, one per class) and `label_smoothing`:
    torch's F.cross_entropy, since smp's SoftCrossEntropyLoss has no class weights."""

    def __init__(self, mode, weight: list[float] | None = None, label_smoothing: float = 0.0,
                 ignore_index: int = -100):
        super().__init__()
        if mode != "multiclass":
            raise ValueError("ce expects one label per pixel (task.mode: multiclass); use bce in multilabel mode")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.register_buffer("weight", None if weight is None else torch.tensor(weight, dtype=torch.float32))
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        weight = None if self.weight is None else self.weight.to(logits.device)
        if weight is not None and weight.numel() != logits.shape[1]:
            raise ConfigError(f"loss ce: {weight.numel()} class weights for {logits.shape[1]} classes")
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=self.label_smoothing,
                               ignore_index=self.ignore_index)


LOSSES = {
    "bce": _bce,
    "dice": smp_losses.DiceLoss,
    "jaccard": smp_losses.JaccardLoss,
    "iou": smp_losses.JaccardLoss,
    "focal": smp_losses.FocalLoss,
    "tversky": smp_losses.TverskyLoss,
    "focal_tversky": _focal_tversky,
    "lovasz": smp_losses.LovaszLoss,
}

MULTICLASS_LOSSES = {"ce": CrossEntropy, "cross_entropy": CrossEntropy}  # one label per pixel only
# what the wrappers build, whose signature tells whether a term takes ignore_index
_IGNORE_TARGETS = {_focal_tversky: smp_losses.TverskyLoss, _bce: smp_losses.SoftBCEWithLogitsLoss}


class PluginTerm(nn.Module):
    """A user's loss callable held as a module (so that one of its own, with parameters, moves with the model);
    what it returns must be a one-element tensor, else the error names the plug-in (not the weighted sum)."""

    def __init__(self, loss, key: str, spec: str):
        super().__init__()
        self.loss, self.key, self.spec = loss, key, spec

    def forward(self, logits, target):
        value = self.loss(logits, target)
        if not torch.is_tensor(value) or value.numel() != 1:
            shown = f"a tensor of shape {tuple(value.shape)}" if torch.is_tensor(value) else f"a {type(value).__name__}"
            raise ConfigError(f"{self.key}: the loss of {self.spec} returned {shown}, not a scalar tensor")
        return value.reshape(())


class WeightedSum(nn.Module):
    """The weighted terms; for a model with auxiliary heads, which trains on (main, aux, ...), the same sum on each
    auxiliary output adds with weight `aux_weight`."""

    def __init__(self, terms: list[tuple[str, float, nn.Module]], aux_weight: float = 0.4):
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [weight for _, weight, _ in terms]
        self.terms = nn.ModuleList(module for _, _, module in terms)
        self.aux_weight = aux_weight

    def forward(self, logits, target):
        if isinstance(logits, tuple | list):
            main, *aux = logits
            return self(main, target) + sum(self.aux_weight * self(a, target) for a in aux)
        logits = logits.float()
        if target.dtype != torch.long:  # multiclass targets are class indices; multilabel ones 0/1 planes
            target = target.to(logits.dtype)
        return sum(w * term(logits, target) for w, term in zip(self.weights, self.terms))


def build_loss(cfg: LossConfig, mode: str, ignore_index: int | None = None) -> nn.Module:
    """The weighted terms in smp's `mode`; `ignore_index`: the void label of the targets (None: no void)."""
    if not cfg.terms:
        raise ConfigError("loss.terms: at least one loss term is needed")
    terms = []
    for i, term in enumerate(cfg.terms):
        key = f"loss.terms[{i}]"
        name = term.name.lower()
        if is_plugin(term.name):
            factory = load_plugin(term.name, f"{key}.name")
            params = _void_params(factory, term.params, ignore_index, key, term.name)
            terms.append((term.name, term.weight, _plugin_term(factory, term.name, params, f"{key}.name")))
            continue
        registry = {**LOSSES, **MULTICLASS_LOSSES} if mode == "multiclass" else LOSSES
        if name in MULTICLASS_LOSSES and mode != "multiclass":
            raise ConfigError(f"{key}.name: {term.name!r} is a multiclass loss (task.mode: multiclass); use bce here")
        if name not in registry:
            close = difflib.get_close_matches(name, registry, n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(registry)})"
            raise ConfigError(f"{key}.name: unknown loss {term.name!r}{hint}; a plug-in is written "
                              f"'package.module:Name' or 'path/to/file.py:Name'")
        params = _void_params(_IGNORE_TARGETS.get(registry[name], registry[name]), term.params, ignore_index, key,
                              term.name)
        try:
            module = registry[name](mode, **params)
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"{key}.params: {' '.join(str(e).split())}") from None
        terms.append((name, term.weight, module))
    return WeightedSum(terms, cfg.aux_weight)


def _void_params(factory, params: dict, ignore_index: int | None, key: str, name: str) -> dict:
    """`params` with the void label added as `ignore_index` (when the targets hold void): refused for a term whose
    constructor cannot take it (a user's loss, a future smp loss), since it would learn void as a class."""
    if ignore_index is None:
        return params
    if "ignore_index" in params and params["ignore_index"] != ignore_index:
        raise ConfigError(f"{key}.params.ignore_index: {params['ignore_index']!r} differs from task.ignore_index "
                          f"{ignore_index}; leave it out (the task's void reaches every term)")
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read: it cannot be shown to take it
        parameters = []
    accepts = any(p.name == "ignore_index" or p.kind is p.VAR_KEYWORD for p in parameters)
    if not accepts:
        raise ConfigError(f"{key}.name: {name!r} takes no ignore_index, so it would learn the void pixels "
                          f"(task.ignore_index {ignore_index}) as a class; use a term that does, or set "
                          "task.ignore_index: null if the masks hold no void")
    return {**params, "ignore_index": ignore_index}


def _plugin_term(factory, spec: str, params: dict, key: str) -> nn.Module:
    loss = call_plugin(factory, key, spec, **params)
    if not callable(loss):
        raise ConfigError(f"{key}: {spec}(**params) returned a {type(loss).__name__}, not a callable(logits, target)")
    try:
        inspect.signature(loss).bind(None, None)
    except TypeError as e:
        raise ConfigError(f"{key}: {spec}(**params) returned a loss that cannot be called as (logits, target): {e}") \
            from None
    except ValueError:
        pass
    return PluginTerm(loss, key, spec)
