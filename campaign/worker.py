"""A campaign's workers: each draws trials from the shared study until the campaign is done.

The loop is ours rather than one `study.optimize` call because "done" is a property of the whole study, not of one
worker: a grid is done when every point has settled (completed, pruned, or failed beyond its retry), a queue when
every entry has, a sampled space when --trials have. A worker with nothing left to start waits while other workers
still run trials (their heartbeat may stop, and the retry is then its to run), and leaves when all have settled.
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from campaign import study as studies
from campaign.space import Space

DUPLICATE_ATTR = "duplicate_of"  # user attribute of a grid trial that found its point already taken
QUEUE_ATTR = "queue_index"  # user attribute of a queued trial: its place in the queue
QUEUE_CONFIG_ATTR = "queue_config"  # user attribute of a queued trial: the whole config it trains
SETTLED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class Campaign:
    """Everything a worker needs, also in a fresh process (it is pickled to spawned workers)."""
    name: str
    storage: str
    out: str  # runs/<study>: trial-<n>/ folders and the report
    config: str | None  # the base config of a space campaign
    overrides: list[str] = field(default_factory=list)
    space: Space | None = None  # None: a queue campaign (configs stored in the queued trials)
    queue_size: int = 0
    trials: int | None = None  # settled trials wanted (sampled spaces); a grid or queue ends when covered
    heartbeat: int | None = 60
    grace: int | None = None
    prune: str | None = None
    progress: bool = False
    poll_seconds: float = 2.0

    def sampler(self):
        if self.space is not None and self.space.all_grid:
            return optuna.samplers.GridSampler(self.space.grid(), seed=0)
        if self.space is None:
            return optuna.samplers.RandomSampler()  # queued trials fix everything; nothing is sampled
        return optuna.samplers.TPESampler(constant_liar=True)  # liar: parallel workers spread out


def run_worker(campaign: Campaign, device: str | None = None, pruner=None) -> dict:
    """Draw and run trials until the campaign is done; returns the counts of this worker's trials by state."""
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device  # before anything touches CUDA in this process
    from campaign.trial import objective_for  # imports torch: only in the process that trains

    storage = studies.open_storage(campaign.storage, campaign.heartbeat, campaign.grace)
    study = studies.load(campaign.name, storage, campaign.sampler(), pruner or studies.build_pruner(campaign.prune))
    objective = objective_for(campaign, study)
    counts: dict[str, int] = defaultdict(int)

    def count(_, trial) -> None:
        counts[trial.state.name.lower()] += 1

    waiting_announced = False
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # trials of dead workers: failed, their retry queued
        left = campaign_state(campaign, study.get_trials(deepcopy=False))
        if left["done"]:
            break
        if not left["startable"]:
            if not studies.has_heartbeat(storage):
                print(f"worker: {left['running']} trial(s) still running elsewhere; this storage has no heartbeat, "
                      f"so this worker leaves them to their workers", flush=True)
                break
            if not waiting_announced:
                print(f"worker: waiting for {left['running']} running trial(s) of other workers", flush=True)
                waiting_announced = True
            time.sleep(campaign.poll_seconds)
            continue
        waiting_announced = False
        study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True, callbacks=[count])
    return dict(counts)


def campaign_state(campaign: Campaign, trials: list) -> dict:
    """Whether the campaign is done, and whether a new trial may start now.

    Trials are grouped by lineage (a heartbeat retry belongs to the trial it retries); a lineage is settled
    when its latest trial is. Grid trials that stood down as duplicates do not count."""
    lineages = latest_of_lineages(trials)
    settled = [t for t in lineages if t.state in SETTLED]
    running = sum(t.state == TrialState.RUNNING for t in lineages)
    waiting = sum(t.state == TrialState.WAITING for t in lineages)
    if campaign.space is None:
        covered = {t.user_attrs.get(QUEUE_ATTR) for t in settled}
        done = len(covered & set(range(campaign.queue_size))) == campaign.queue_size
        return {"done": done, "startable": waiting > 0, "running": running}
    if campaign.space.all_grid:
        total = campaign.space.grid_size()
        covered = {t.system_attrs.get("grid_id") for t in settled}
        taken = covered | {t.system_attrs.get("grid_id") for t in lineages if t.state == TrialState.RUNNING}
        done = len(covered & set(range(total))) == total
        return {"done": done, "startable": waiting > 0 or len(taken & set(range(total))) < total, "running": running}
    done = len(settled) >= campaign.trials
    return {"done": done, "startable": waiting > 0 or len(settled) + running < campaign.trials, "running": running}


def latest_of_lineages(trials: list) -> list:
    """The latest trial of each lineage (a trial and its heartbeat retries), leaving out grid duplicates."""
    latest: dict[int, optuna.trial.FrozenTrial] = {}
    for t in trials:
        if t.user_attrs.get(DUPLICATE_ATTR) is not None:
            continue
        root = t.system_attrs.get("failed_trial", t.number)
        if root not in latest or t.number > latest[root].number:
            latest[root] = t
    return list(latest.values())


def duplicate_of(study: optuna.Study, trial_id: int, grid_size: int) -> int | None:
    """A grid trial beyond the grid's size was placed by GridSampler on a point it thought free; under concurrency
    two workers can pick the same one. The lower-numbered trial keeps the point, a completed one always does."""
    me = study._storage.get_trial(trial_id)
    grid_id = me.system_attrs.get("grid_id")
    if grid_id is None or me.number < grid_size or "failed_trial" in me.system_attrs:
        return None  # trial n < grid size has point n; retries keep the point of the trial they retry
    for t in study.get_trials(deepcopy=False):
        if (t.number == me.number or t.system_attrs.get("grid_id") != grid_id
                or t.user_attrs.get(DUPLICATE_ATTR) is not None):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
                t.state in (TrialState.RUNNING, TrialState.WAITING) and t.number < me.number):
            return t.number
    return None


def launch(campaign: Campaign, workers: int, devices: list[str] | None) -> list[int]:
    """One worker per device (CUDA_VISIBLE_DEVICES) or `workers` CPU workers, in spawned processes; with one
    worker and no devices it runs here. Returns the worker processes' exit codes."""
    if devices is None and workers == 1:
        print(f"worker: {run_worker(campaign)}", flush=True)
        return [0]
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # fresh interpreters: CUDA and threads start clean
    slots = devices if devices is not None else [None] * workers
    processes = [context.Process(target=_worker_main, args=(campaign, device), name=f"sweep-worker-{i}")
                 for i, device in enumerate(slots)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    return [process.exitcode for process in processes]


def _worker_main(campaign: Campaign, device: str | None) -> None:
    from utils.errors import UserError

    try:
        counts = run_worker(campaign, device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"worker{'' if device is None else ' on device ' + device}: {json.dumps(counts)}", flush=True)


def trial_dir(campaign: Campaign, number: int) -> Path:
    return Path(campaign.out) / f"trial-{number}"
