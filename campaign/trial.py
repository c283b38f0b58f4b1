"""One trial = one ordinary training run in runs/<study>/trial-<n>/, reporting each validation to Optuna."""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import optuna

from campaign.plan import DUPLICATE_ATTR, QUEUE_ATTR, QUEUE_CONFIG_ATTR, Campaign, duplicate_of, trial_dir
from tracking.build import build_tracking
from trainer.callbacks import Callback, StopTraining
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import REDACTED, Config, from_dict, load_config
from utils.logger import labelled_output


class DuplicatePoint(Exception):
    """This grid trial's point is another trial's: it stands down (recorded as failed, `duplicate_of` set)."""


class ReportToOptuna(Callback):
    """Reports each validation score (Dice, or mIoU for a multiclass task) at its epoch; the study's pruner may then
    stop the run after that epoch."""
    name = "optuna pruning"

    def __init__(self, trial: optuna.Trial):
        self.trial = trial

    def on_epoch_end(self, trainer, record: dict) -> None:
        score = record.get(f"val_{trainer.mode.metric}")
        if score is None:
            return
        self.trial.report(score, record["epoch"])
        if self.trial.should_prune():
            raise StopTraining("pruned")


def trial_config(campaign: Campaign, trial: optuna.Trial) -> Config:
    if campaign.space is None:
        attrs = trial.user_attrs
        cfg = from_dict(attrs[QUEUE_CONFIG_ATTR], source=f"queued config #{attrs[QUEUE_ATTR]}",
                        overrides=campaign.overrides)
        webhook = campaign.queue_webhooks.get(attrs[QUEUE_ATTR])
        notify = cfg.logging.notify
        if webhook and notify is not None and notify.webhook == REDACTED:  # the real URL, redacted in the study
            cfg = dataclasses.replace(cfg, logging=dataclasses.replace(
                cfg.logging, notify=dataclasses.replace(notify, webhook=webhook)))
        return cfg
    return load_config(campaign.config, list(campaign.overrides) + campaign.space.overrides(trial))


def objective_for(campaign: Campaign, study: optuna.Study):
    grid_size = campaign.space.grid_size() if campaign.space is not None and campaign.space.all_grid else None

    def objective(trial: optuna.Trial) -> float:
        if grid_size is not None:
            taken_by = duplicate_of(study, trial._trial_id, grid_size)
            if taken_by is not None:
                trial.set_user_attr(DUPLICATE_ATTR, taken_by)
                raise DuplicatePoint(f"trial {trial.number}: its grid point is trial {taken_by}'s; standing down")
        with labelled_output(f"trial {trial.number}"):  # workers share the terminal: every line says whose it is
            result = _train(campaign, study, trial)
        trial.set_user_attr("epochs", result["epochs"])
        trial.set_user_attr("metric", result["metric"])  # the report's score column: val_dice or val_miou
        if result["stopped_by"] == "pruned":
            raise optuna.TrialPruned(f"pruned after epoch {result['epochs']}")
        return result["best_score"]  # the task mode's score: Dice or mIoU

    return objective


def _train(campaign: Campaign, study: optuna.Study, trial: optuna.Trial) -> dict:
    """The trial's training run, tracked like any run: in the MLflow store beside the campaign folder, named
    `<campaign folder>/trial-<n>` and tagged with the study."""
    cfg = trial_config(campaign, trial)
    run_dir = trial_dir(campaign, trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    trial.set_user_attr("host", socket.gethostname())  # where it ran: several machines may share the study
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        trial.set_user_attr("devices", os.environ["CUDA_VISIBLE_DEVICES"])
    print(f"{trial.params or trial.user_attrs.get('queue_name')} -> {run_dir}", flush=True)
    runtime = setup_runtime(cfg.trainer)
    tracking = build_tracking(cfg, run_dir, runtime.is_main, runs_root=Path(campaign.out).parent, group=campaign.name)
    try:
        return Trainer(cfg, run_dir, runtime, progress=campaign.progress,
                       callbacks=[ReportToOptuna(trial), *tracking]).fit()
    except KeyboardInterrupt:  # Ctrl-C: Optuna records the trial as failed; queue it again for the next run
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study._storage.get_trial(trial._trial_id))
        raise KeyboardInterrupt(f"trial {trial.number} is queued again; run the same sweep.py command to go on "
                                f"with the campaign") from None
