"""Learning-rate schedules by name (torch.optim.lr_scheduler), each with an optional linear warmup.

torch's SequentialLR cannot chain a warmup with ReduceLROnPlateau, so the warmup is done here: it scales the
learning rate per optimizer step, then the named scheduler takes over, stepped once per epoch (ReduceLROnPlateau
with the validation Dice).
"""
from __future__ import annotations

import difflib
import math

import torch
from torch.optim import lr_scheduler

from utils.config import SchedulerConfig
from utils.errors import ConfigError

SCHEDULERS = {
    "step": lambda opt, epochs, **p: lr_scheduler.StepLR(opt, **{"step_size": max(1, epochs // 3), "gamma": 0.1, **p}),
    "plateau": lambda opt, epochs, **p: lr_scheduler.ReduceLROnPlateau(opt, **{"mode": "max", "factor": 0.5,
                                                                              "patience": 3, **p}),
    "cosine": lambda opt, epochs, **p: lr_scheduler.CosineAnnealingLR(opt, **{"T_max": max(1, epochs), **p}),
    "cosine_restarts": lambda opt, epochs, **p: lr_scheduler.CosineAnnealingWarmRestarts(opt, **{"T_0": 10, **p}),
}


class Schedule:
    """Call `after_step()` after every optimizer step and `after_epoch(score)` after every epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, steps_per_epoch: int, epochs: int):
        self.optimizer = optimizer
        self.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        self.start_factor = cfg.warmup_start_factor
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.steps = 0
        self.warmup_ended_this_epoch = False
        self.main = None
        if cfg.name is not None:
            name = cfg.name.lower()
            if name not in SCHEDULERS:
                close = difflib.get_close_matches(name, SCHEDULERS, n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else f" (choose from {', '.join(SCHEDULERS)})"
                raise ConfigError(f"scheduler.name: unknown scheduler {cfg.name!r}{hint}")
            remaining = epochs - math.ceil(cfg.warmup_epochs)
            try:
                self.main = SCHEDULERS[name](optimizer, remaining, **cfg.params)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"scheduler.params: {' '.join(str(e).split())}") from None
        if self.warmup_steps:
            self._scale(self.start_factor)

    @property
    def warming_up(self) -> bool:
        return self.steps < self.warmup_steps

    def after_step(self) -> None:
        if self.warming_up:
            self.steps += 1
            self._scale(self.start_factor + (1 - self.start_factor) * self.steps / self.warmup_steps)
            self.warmup_ended_this_epoch = not self.warming_up

    def after_epoch(self, score: float | None) -> None:
        """The named scheduler counts only whole epochs after the warmup, so a cosine ends at its minimum."""
        if self.warmup_ended_this_epoch:
            self.warmup_ended_this_epoch = False
            return
        if self.main is None or self.warming_up:
            return
        if isinstance(self.main, lr_scheduler.ReduceLROnPlateau):
            if score is not None:  # only epochs that validated count towards the patience
                self.main.step(score)
        else:
            self.main.step()

    def _scale(self, factor: float) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def state_dict(self) -> dict:
        return {"steps": self.steps, "warmup_ended_this_epoch": self.warmup_ended_this_epoch,
                "main": self.main.state_dict() if self.main else None}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        self.warmup_ended_this_epoch = state["warmup_ended_this_epoch"]
        if self.main is not None and state["main"] is not None:
            self.main.load_state_dict(state["main"])
