"""Starting or joining a campaign: validate everything, create or join the study, then run the workers."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from optuna.trial import TrialState

from campaign import study as studies
from campaign.launch import launch
from campaign.plan import QUEUE_ATTR, QUEUE_CONFIG_ATTR, Campaign, latest_of_lineages
from campaign.space import load_space
from tracking.checks import check_tracking
from utils.config import load_config, secret_values, to_dict
from utils.errors import UserError
from utils.files import check_output_folder, make_folder

# every trial's config starts from these (the user's --set comes after them and wins): a finished trial keeps
# best.pt only, which is what the report and ensembles use (--set trainer.keep_last=true keeps last.pt too)
TRIAL_DEFAULTS = ["trainer.keep_last=false"]


def queue_entries(paths: list[str], overrides: list[str]) -> list[dict]:
    """Each queued file as a whole, validated config (with `--set` applied), to be stored in its trial (redacted:
    a literal webhook URL is kept apart under "webhook", and the loaded config under "cfg", for this process and
    its workers only)."""
    entries = []
    for path in paths:
        cfg = load_config(path, overrides)
        config = to_dict(cfg)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        webhook = next(iter(secret_values(cfg)), None)
        entries.append({"name": str(path), "sha": digest, "config": config, "webhook": webhook, "cfg": cfg})
    return entries


def start(name: str | None, config: str | None, space: str | None, queue: list[str] | None, overrides: list[str],
          storage: str | None, out: str | None, trials: int | None, workers: int, devices: list[str] | None,
          heartbeat: int, grace: int | None, prune: str | None, progress: bool) -> int:
    if (space is None) == (queue is None):
        raise UserError("give either --space SPACE.yaml (with --config) or --queue CONFIG.yaml ...")
    if space is not None and config is None:
        raise UserError("--space needs the base --config it varies")
    if trials is not None and trials < 1:
        raise UserError(f"--trials: must be at least 1, got {trials}")
    if devices is not None and not devices:
        raise UserError("--devices: give GPU ids, e.g. --devices 0,1")
    if workers < 1:
        raise UserError(f"--workers: must be at least 1, got {workers}")
    check_heartbeat(heartbeat, grace)
    studies.build_pruner(prune)  # a wrong name fails here, before any training

    overrides = [*TRIAL_DEFAULTS, *overrides]
    parsed = load_space(space, config, overrides) if space is not None else None
    entries = queue_entries(queue, overrides) if queue is not None else []
    for cfg in [load_config(config, overrides)] if parsed is not None else [e["cfg"] for e in entries]:
        check_tracking(cfg)  # a missing tracking package fails here, not in every trial
    if parsed is not None and not parsed.all_grid and trials is None:
        raise UserError(f"{space}: the space samples values, so say how many trials: --trials N")
    name = name or (f"{Path(config).stem}-{Path(space).stem}" if space else Path(queue[0]).stem)
    out_dir = check_output_folder(Path(out) if out else Path("runs") / name, "--out" if out else "")
    if storage is None:
        make_folder(out_dir)
        storage = studies.default_storage(out_dir)
    campaign = Campaign(name=name, storage=storage, out=str(out_dir), config=config, overrides=list(overrides),
                        space=parsed, queue_size=len(entries), trials=trials, heartbeat=heartbeat or None,
                        grace=grace, prune=prune, progress=progress,
                        queue_webhooks={i: e["webhook"] for i, e in enumerate(entries) if e["webhook"]})
    record = ({"kind": "space", "space": parsed.describe()} if parsed is not None else
              {"kind": "queue", "entries": [{"name": e["name"], "sha": e["sha"]} for e in entries]})
    opened = studies.open_storage(storage, campaign.heartbeat, grace)
    study, created = studies.create_or_join(name, opened, record)
    if created and entries:
        for index, entry in enumerate(entries):
            study.enqueue_trial({}, user_attrs={QUEUE_ATTR: index, "queue_name": entry["name"],
                                                QUEUE_CONFIG_ATTR: entry["config"]})
    if parsed is not None and parsed.all_grid and trials is not None:
        print(f"note: a grid runs each of its {parsed.grid_size()} points once; --trials is ignored")
    what = (f"{parsed.grid_size()}-point grid" if parsed is not None and parsed.all_grid else
            f"{trials} sampled trials" if parsed is not None else f"queue of {len(entries)} configs")
    print(f"study {name!r} ({what}) in {studies.shown_url(storage)}: {'created' if created else 'joined'}; "
          f"trials in {out_dir}/trial-<n>/", flush=True)
    codes = launch(campaign, workers, devices)
    summary, failed = summarise(study)
    hint = f"python sweep.py --report {name}" + (f" --out {out_dir}" if out else "")
    if storage != studies.default_storage(out_dir):
        hint += f" --storage {studies.shown_url(storage)}"
    print(f"study {name!r}: {summary}; table: {hint}", flush=True)
    if any(code != 0 for code in codes):
        raise UserError(f"{sum(code != 0 for code in codes)} worker process(es) failed (exit codes {codes})")
    if failed:
        print(f"warning: trial(s) {', '.join(map(str, failed))} failed (their errors are in the log above)",
              file=sys.stderr)
        return 1
    return 0


def check_heartbeat(heartbeat: int, grace: int | None) -> None:
    """Seconds between a worker's heartbeats (0: off) and of silence before its trial counts as dead: a grace that
    is not longer than the heartbeat would fail live trials."""
    if heartbeat < 0:
        raise UserError(f"--heartbeat: must be 0 (off) or a number of seconds, got {heartbeat}")
    if grace is not None and heartbeat == 0:
        raise UserError("--grace: has no effect with --heartbeat 0 (no heartbeat, so no trial is ever found silent)")
    if grace is not None and grace <= heartbeat:
        raise UserError(f"--grace: must be longer than --heartbeat ({heartbeat} s), got {grace}")


def summarise(study) -> tuple[str, list[int]]:
    """Trial counts by state, and the trials whose failure is final (not a duplicate, not retried)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    failed = [t.number for t in latest_of_lineages(trials) if t.state == TrialState.FAIL]
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trials", failed
