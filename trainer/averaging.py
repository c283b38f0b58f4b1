"""Weight averaging with torch.optim.swa_utils: an EMA updated after every optimizer step, or SWA averaged once
per epoch over the last epochs with SWALR's schedule and a BatchNorm pass at the end."""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, get_ema_multi_avg_fn, update_bn

from utils.config import AveragingConfig


class WeightAverager:
    def __init__(self, cfg: AveragingConfig, model: nn.Module, optimizer: torch.optim.Optimizer, epochs: int):
        self.mode = cfg.mode
        self.swalr: SWALR | None = None
        if self.mode == "ema":
            # use_buffers: BatchNorm statistics are averaged too, so the EMA model is usable without a BN pass
            self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        else:
            self.averaged = AveragedModel(model)
            self.swa_start_epoch = int(cfg.swa_start * epochs)
            base_lr = optimizer.param_groups[0]["lr"]
            self.swalr = SWALR(optimizer, swa_lr=cfg.swa_lr or base_lr / 10, anneal_epochs=cfg.swa_anneal_epochs)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def count(self) -> int:
        return int(self.averaged.n_averaged.item())

    def in_swa(self, epoch: int) -> bool:
        return self.mode == "swa" and epoch >= self.swa_start_epoch

    def after_step(self, model: nn.Module) -> None:
        if self.mode == "ema":
            self.averaged.update_parameters(model)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        if self.in_swa(epoch):
            self.averaged.update_parameters(model)
            self.swalr.step()

    def update_batchnorm(self, inputs: Iterable[torch.Tensor]) -> None:
        """SWA's averaged weights need BatchNorm statistics of their own: one pass over the training inputs."""
        if self.mode == "swa" and self.count:
            update_bn(inputs, self.averaged)

    def state_dict(self) -> dict:
        return {"averaged": self.averaged.state_dict(), "swalr": self.swalr.state_dict() if self.swalr else None}

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state["averaged"])
        if self.swalr is not None and state["swalr"] is not None:
            self.swalr.load_state_dict(state["swalr"])
