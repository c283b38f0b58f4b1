"""Whatever observes a run (tracking backends, notifications, a sweep's pruner) hangs off this one small interface,
called by the trainer at fixed points, on rank 0 only. The loop never grows a branch per backend.

A callback that raises while training (a tracking server that went away) is reported once on stderr and then left
out; training goes on. Only `StopTraining` is meant to change the run: raised from `on_epoch_end`, it ends
training cleanly after that epoch (checkpoints of the epoch are written), on every rank.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable


class StopTraining(Exception):
    """Raised by a callback to end the run after the current epoch; the message says why (e.g. "pruned")."""


class Callback:
    """Every hook is optional. `trainer` is the running Trainer (its cfg, run_dir, classes, best_score, ...)."""

    def on_start(self, trainer) -> None:
        """Before the first epoch (after a resume, before the first resumed epoch)."""

    def on_epoch_end(self, trainer, record: dict) -> None:
        """After every epoch, with the record written to metrics.jsonl (`val_dice` is None when not validated)."""

    def on_best(self, trainer, record: dict) -> None:
        """After an epoch whose validation score is the best so far, once best.pt is written."""

    def on_end(self, trainer, result: dict) -> None:
        """After the last epoch (or an early stop); `result` is what Trainer.fit returns."""

    def on_crash(self, trainer, error: BaseException) -> None:
        """Training raised `error` (it is re-raised after the callbacks ran)."""


class CallbackList:
    """Calls each callback in turn; one that fails is warned about once and dropped, never stopping training."""

    def __init__(self, callbacks: Iterable[Callback] = ()):
        self.callbacks = list(callbacks)

    def emit(self, event: str, trainer, *args) -> None:
        for callback in list(self.callbacks):
            try:
                getattr(callback, event)(trainer, *args)
            except StopTraining:
                raise
            except Exception as e:  # any failure of an observer: warn once, keep training
                self.callbacks.remove(callback)
                name = getattr(callback, "name", type(callback).__name__)
                print(f"warning: {name} failed in {event} and is turned off for this run "
                      f"({type(e).__name__}: {' '.join(str(e).split())[:200]})", file=sys.stderr, flush=True)
