"""The Optuna study behind a campaign: its storage (SQLite file, PostgreSQL/MySQL URL or journal file), the
heartbeat that fails and retries the trials of dead workers, and the record of what the study sweeps."""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna

from utils.errors import UserError

RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
CAMPAIGN_ATTR = "campaign"  # study user attribute: the space or queue the study was created with

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(out: Path) -> str:
    return f"sqlite:///{out / 'study.db'}"


def shown_url(url: str) -> str:
    """The URL as printed in messages: without a password."""
    if "://" not in url:
        return url
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: the caller reports it as it is
        return url


def open_storage(url: str, heartbeat: int | None = None, grace: int | None = None):
    """An RDBStorage for database URLs (with heartbeat when asked), a JournalStorage for a file path; an
    unreachable or malformed storage is a one-line UserError naming the URL."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        if not Path(url).parent.is_dir():
            raise UserError(f"storage {url}: the folder {Path(url).parent} does not exist")
        return JournalStorage(JournalFileBackend(url))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme not in RDB_SCHEMES:
        raise UserError(f"storage {shown_url(url)}: unknown scheme {scheme!r} (use sqlite://, postgresql://, "
                        f"mysql:// or a journal file path)")
    kwargs = {"connect_args": {"timeout": 60}} if scheme == "sqlite" else {"pool_pre_ping": True}
    heartbeat_kwargs = {}
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat and retry are stable enough
    if heartbeat:
        heartbeat_kwargs = dict(heartbeat_interval=heartbeat, grace_period=grace or 2 * heartbeat,
                                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                                    max_retry=1))
    for attempt in range(3):  # workers starting together race to create the tables: the losers try again
        try:
            return optuna.storages.RDBStorage(_with_installed_driver(url), engine_kwargs=kwargs, **heartbeat_kwargs)
        except Exception as e:  # sqlalchemy/driver errors of every kind: the user needs the URL and the reason
            error = e
            time.sleep(0.5 + attempt)
    reason = " ".join(str(error).split("\n")[0].split())[:300]
    raise UserError(f"storage {shown_url(url)}: cannot open it ({type(error).__name__}: {reason})") from None


def _with_installed_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the pinned driver is psycopg2, so name it when
    psycopg 3 is not installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def has_heartbeat(storage) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def create_or_join(name: str, storage, campaign: dict) -> tuple[optuna.Study, bool]:
    """Create the study (maximising validation Dice) or join it; a study made for another campaign is refused.
    Returns the study and whether it was created now."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
    stored = study.user_attrs.get(CAMPAIGN_ATTR)
    if stored is None:
        study.set_user_attr(CAMPAIGN_ATTR, campaign)
        return study, True
    if stored != campaign:
        raise UserError(f"study {name!r} was created with another {stored.get('kind', 'space')} "
                        f"({_summary(stored)}); this command asks for {_summary(campaign)}: use another --study")
    return study, False


def load(name: str, storage, sampler=None, pruner=None) -> optuna.Study:
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        raise UserError(f"study {name!r} not found in the storage") from None


def _summary(campaign: dict) -> str:
    if campaign.get("kind") == "queue":
        return "queue of " + ", ".join(entry["name"] for entry in campaign["entries"])
    return "space over " + ", ".join(campaign.get("space", {}))


def build_pruner(name: str | None):
    """`--prune median`: stop a trial whose validation Dice is below the median of earlier trials at that epoch."""
    if name in (None, "none"):
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2)
    raise UserError(f"--prune {name!r}: unknown pruner (use median or none)")
