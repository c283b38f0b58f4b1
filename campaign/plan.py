"""What a campaign is, shared by the process that starts it, its workers, its trials and its report: the settings
a worker needs, the trial attributes they exchange through the study, and how far the campaign has come."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

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
    # queue index -> the literal webhook URL of that queued config: the study holds the config redacted (a saved
    # copy), the workers get the real value in memory only, from the process that read the queue files
    queue_webhooks: dict[int, str] = field(default_factory=dict)
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


def trial_dir(campaign: Campaign, number: int) -> Path:
    return Path(campaign.out) / f"trial-{number}"


def planned_trials(campaign: Campaign) -> int:
    """The trials the campaign settles in all: the grid's points, the queue's entries, or --trials."""
    if campaign.space is None:
        return campaign.queue_size
    return campaign.space.grid_size() if campaign.space.all_grid else campaign.trials


def progress_line(campaign: Campaign, trials: Iterable) -> str:
    """`sweep demo-losses: 3/8 trials settled (2 complete, 1 pruned), 2 running; best val_dice 0.8123 (trial 1)`:
    printed as each trial ends, so a long campaign with interleaved workers shows where it stands."""
    lineages = latest_of_lineages(list(trials))
    settled = [t for t in lineages if t.state in SETTLED]
    states: dict[str, int] = {}
    for t in settled:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    running = sum(t.state == TrialState.RUNNING for t in lineages)
    line = (f"sweep {campaign.name}: {len(settled)}/{planned_trials(campaign)} trials settled"
            f"{' (' + ', '.join(f'{n} {s}' for s, n in sorted(states.items())) + ')' if states else ''}, "
            f"{running} running")
    scored = [t for t in lineages if t.state == TrialState.COMPLETE and t.value is not None]
    if scored:
        best = max(scored, key=lambda t: t.value)
        line += f"; best val_{best.user_attrs.get('metric', 'score')} {best.value:.4f} (trial {best.number})"
    return line
