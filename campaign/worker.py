"""A campaign's workers: each draws trials from the shared study until the campaign is done.

The loop is ours rather than one `study.optimize` call because "done" is a property of the whole study, not of one
worker: a grid is done when every point has settled (completed, pruned, or failed beyond its retry), a queue when
every entry has, a sampled space when --trials have. A worker with nothing left to start waits while other workers
still run trials (their heartbeat may stop, and the retry is then its to run), and leaves when all have settled.
After each of its trials a worker prints where the whole campaign stands (plan.progress_line).
"""
from __future__ import annotations

import time
import warnings
from collections import defaultdict

import optuna

from campaign import study as studies
from campaign.plan import Campaign, campaign_state, progress_line
from campaign.trial import objective_for


def run_worker(campaign: Campaign, pruner=None) -> dict:
    """Draw and run trials until the campaign is done; returns the counts of this worker's trials by state."""
    storage = studies.open_storage(campaign.storage, campaign.heartbeat, campaign.grace)
    study = studies.load(campaign.name, storage, campaign.sampler(), pruner or studies.build_pruner(campaign.prune))
    objective = objective_for(campaign, study)
    counts: dict[str, int] = defaultdict(int)

    def count(study, trial) -> None:
        counts[trial.state.name.lower()] += 1
        print(progress_line(campaign, study.get_trials(deepcopy=False)), flush=True)

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
