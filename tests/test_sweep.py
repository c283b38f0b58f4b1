"""Campaigns on Optuna: bad input fails before training, grids run every point once across workers, a killed worker's
trial is retried, queues drain in order, pruning is recorded, and workers on a PostgreSQL study share nothing else."""
from __future__ import annotations

import csv
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from campaign import study as studies
from campaign.plan import Campaign, duplicate_of
from campaign.space import load_space
from campaign.worker import run_worker
from tests.conftest import ROOT, files_containing, tiny_overrides
from tests.system import unavailable
from utils.errors import ConfigError, UserError

DEMO = str(ROOT / "configs" / "demo.yaml")


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def sets(root: Path, cache: Path, *extra: str) -> list[str]:
    items = tiny_overrides(root, cache) + ["trainer.epochs=1", "data.image_size=32", *extra]
    return [arg for item in items for arg in ("--set", item)]


def sweep(*args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "sweep.py", *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    if check:
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run


def sweep_main(*args: str) -> int:
    from sweep import main

    return main(list(args))


def trials_of(storage: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=studies.open_storage(storage)).get_trials()


def best_dice(run_dir: str) -> float:
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return max(r["val_dice"] for r in records if r.get("val_dice") is not None)


def completed_points(trials) -> list[int]:
    return sorted(t.system_attrs["grid_id"] for t in trials if t.state == TrialState.COMPLETE)


# ------------------------------------------------------------------------------------------- bad input


def test_bad_spaces_fail_before_training_naming_the_key(tmp_path):
    cases = {"optimizer.lrr: {grid: [1.0e-3]}": "optimizer.lrr=0.001: unknown key 'optimizer.lrr'",
             "trainer.epochs: {grid: [2, two]}": 'trainer.epochs="two": trainer.epochs: expected an integer',
             "model.encoder: {grid: []}": "model.encoder: the grid is empty",
             "optimizer.lr: {loguniform: [0, 1]}": "optimizer.lr: loguniform needs a positive low end",
             "optimizer.lr: {normal: [0, 1]}": "optimizer.lr: expected one of {grid: ...}"}
    for i, (text, expected) in enumerate(cases.items()):
        with pytest.raises(ConfigError) as error:
            load_space(write(tmp_path / f"s{i}.yaml", text), DEMO)
        assert str(error.value).startswith(f"{tmp_path / f's{i}.yaml'}: ") and expected in str(error.value), error.value
    space = load_space(write(tmp_path / "ok.yaml", "loss.terms: {choice: {dice: [{name: dice}]}}\n"
                             "optimizer.lr: {loguniform: [1.0e-5, 1.0e-3]}\ntrainer.epochs: {int: [1, 3]}"), DEMO)
    assert not space.all_grid and space.keys == ["loss.terms", "optimizer.lr", "trainer.epochs"]


def test_cli_errors_are_one_line(tmp_path):
    space = write(tmp_path / "space.yaml", "optimizer.lrr: {grid: [1.0e-3]}")
    run = sweep("--config", DEMO, "--space", space, "--out", str(tmp_path / "a"), check=False, timeout=180)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "optimizer.lrr" in run.stderr and not (tmp_path / "a" / "trial-0").exists()

    good = write(tmp_path / "good.yaml", "optimizer.lr: {grid: [1.0e-3]}")
    run = sweep("--config", DEMO, "--space", good, "--storage", "postgresql://sweeper:secret@127.0.0.1:1/optuna",
                check=False, timeout=180)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith("error: storage postgresql://sweeper:***@127.0.0.1:1/optuna: cannot open it "
                                 "(OperationalError: "), run.stderr

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    studies.create_or_join("ablation", studies.open_storage(storage), {"kind": "space", "space": {"model.encoder": {}}})
    run = sweep("--config", DEMO, "--space", good, "--study", "ablation", "--storage", storage, check=False, timeout=180)
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "study 'ablation' was created with another space (space over model.encoder)" in run.stderr


def test_storages_by_url(tmp_path):
    journal = studies.open_storage(str(tmp_path / "study.log"), heartbeat=1)
    assert type(journal).__name__ == "JournalStorage" and not studies.has_heartbeat(journal)
    _, created = studies.create_or_join("j", journal, {"kind": "queue", "entries": []})
    assert created and not studies.create_or_join("j", journal, {"kind": "queue", "entries": []})[1]
    sqlite = studies.open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=1)
    assert studies.has_heartbeat(sqlite) and sqlite.get_heartbeat_interval() == 1
    for url, message in (("redis://host/0", "unknown scheme 'redis'"),
                         (str(tmp_path / "missing" / "study.log"), "does not exist")):
        with pytest.raises(UserError, match=message):
            studies.open_storage(url)


# ------------------------------------------------------------------------------------------- grids


def test_duplicate_grid_points_stand_down():
    """GridSampler may place two concurrent trials beyond the grid's size on one point: the lower number keeps it."""
    study = optuna.create_study(direction="maximize")
    storage, ids = study._storage, []
    for grid_id in (0, 1, 0, 1, 1):
        ids.append(storage.create_new_trial(study._study_id))
        storage.set_trial_system_attr(ids[-1], "grid_id", grid_id)
    storage.set_trial_state_values(ids[1], TrialState.FAIL)
    assert [duplicate_of(study, i, grid_size=2) for i in ids] == [None, None, 0, None, 3]
    storage.set_trial_state_values(ids[3], TrialState.COMPLETE, [0.5])
    assert duplicate_of(study, ids[4], grid_size=2) == 3


def test_campaign_state_follows_retries_and_ignores_duplicates(tmp_path):
    from types import SimpleNamespace

    from campaign.plan import campaign_state

    def trial(number, state, grid_id=None, **system):
        return SimpleNamespace(number=number, state=state, user_attrs={}, system_attrs={"grid_id": grid_id, **system})

    space = load_space(write(tmp_path / "space.yaml", "trainer.seed: {grid: [1, 2]}"), DEMO)
    grid = Campaign("g", "sqlite://", str(tmp_path), DEMO, space=space)
    killed = trial(0, TrialState.FAIL, 0)
    assert campaign_state(grid, [killed]) == {"done": False, "startable": True, "running": 0}
    retry = trial(2, TrialState.RUNNING, 0, failed_trial=0)
    other = trial(1, TrialState.COMPLETE, 1)
    assert campaign_state(grid, [killed, other, retry]) == {"done": False, "startable": False, "running": 1}
    duplicate = trial(3, TrialState.FAIL, 1)
    duplicate.user_attrs["duplicate_of"] = 1
    retry.state = TrialState.COMPLETE
    assert campaign_state(grid, [killed, other, retry, duplicate])["done"]

    sampled = Campaign("s", "sqlite://", str(tmp_path), DEMO, space=load_space(
        write(tmp_path / "tpe.yaml", "optimizer.lr: {loguniform: [1.0e-4, 1.0e-2]}"), DEMO), trials=2)
    assert campaign_state(sampled, [trial(0, TrialState.PRUNED), trial(1, TrialState.RUNNING)]) == \
        {"done": False, "startable": False, "running": 1}
    queue = Campaign("q", "sqlite://", str(tmp_path), None, queue_size=2)
    assert campaign_state(queue, [trial(0, TrialState.COMPLETE), trial(1, TrialState.WAITING)])["startable"]


def test_two_device_workers_run_each_grid_point_once_and_the_table_matches_the_runs(dataset_root, tmp_path):
    space = write(tmp_path / "space.yaml", "optimizer.lr: {grid: [1.0e-3, 2.0e-3]}\ntrainer.seed: {grid: [1, 2]}")
    out = tmp_path / "grid"
    log = sweep("--config", DEMO, "--space", space, "--study", "grid", "--out", str(out), "--devices", "0,1",
                *sets(dataset_root, tmp_path / "cache")).stdout  # one worker per GPU id; on a CPU-only machine
    lines = log.splitlines()  # they train on it
    for n in range(4):  # the two workers' lines interleave, each labelled with its trial
        assert any(re.fullmatch(rf"\[trial {n}\] epoch 1/1  loss .* val Dice .*", line) for line in lines), log
    assert not [line for line in lines if line.startswith("epoch")], log
    progress = [line for line in lines if line.startswith("sweep grid: ")]
    settled = [int(p.split("/")[0].removeprefix("sweep grid: ")) for p in progress]  # one line per finished trial
    assert len(settled) == 4 and settled == sorted(settled) and settled[-1] == 4, log
    assert re.fullmatch(r"sweep grid: 4/4 trials settled \(4 complete\), 0 running; best val_dice [0-9.]+ "
                        r"\(trial \d\)", progress[-1]), progress
    for n in range(4):  # finished trials keep best.pt only (the sweep's trainer.keep_last: false)
        assert (out / f"trial-{n}" / "best.pt").is_file() and not (out / f"trial-{n}" / "last.pt").exists()
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "grid")
    assert {t.user_attrs["devices"] for t in trials} <= {"0", "1"}  # each worker sees only its own device
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 and completed_points(trials) == [0, 1, 2, 3]
    assert sorted(tuple(t.params.values()) for t in trials) == [(1e-3, 1), (1e-3, 2), (2e-3, 1), (2e-3, 2)]

    assert sweep_main("--report", "grid", "--out", str(out)) == 0
    with open(out / "report.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] != [] and len(table) == 4
    assert list(table[0]) == ["trial", "optimizer.lr", "trainer.seed", "val_dice", "state", "epochs", "run_dir"]
    for row in table:
        assert float(row["val_dice"]) == best_dice(row["run_dir"]) and row["state"] == "complete"
        assert Path(row["run_dir"]) == out / f"trial-{row['trial']}"
    assert [float(r["val_dice"]) for r in table] == sorted((float(r["val_dice"]) for r in table), reverse=True)
    assert (out / "report.md").read_text().count("| complete |") == 4 and "<table>" in (out / "report.html").read_text()
    assert (out / "plot_history.html").is_file() and (out / "plotly.min.js").is_file()


def interrupt_in_trial(args: list[str], trial_folder: Path, sig: int) -> int:
    """Start a worker, send it `sig` once `trial_folder` has its config.yaml (the trial's training started)."""
    log_path = trial_folder.parent.parent / f"worker-{sig}.log"  # kept for a failing test's reader
    with open(log_path, "w") as log:  # SIGINT back to its default: a shell's background job (CI) ignores it,
        worker = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=log, stderr=log,  # and so would Python
                                  preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 300
        while not (trial_folder / "config.yaml").is_file():
            assert worker.poll() is None and time.time() < deadline, f"the worker never started {trial_folder.name}"
            time.sleep(0.2)
    finally:
        worker.send_signal(sig)
        worker.wait(timeout=300)
    return worker.returncode


def test_killed_and_interrupted_trials_are_retried_and_the_rerun_completes_every_point_once(dataset_root, tmp_path):
    space = write(tmp_path / "space.yaml", "trainer.seed: {grid: [1, 2]}")
    out = tmp_path / "killed"
    args = ["sweep.py", "--config", DEMO, "--space", space, "--study", "killed", "--out", str(out),
            "--heartbeat", "1", "--grace", "2", *sets(dataset_root, tmp_path / "cache")]
    storage = f"sqlite:///{out / 'study.db'}"
    assert interrupt_in_trial(args, out / "trial-0", signal.SIGKILL) == -signal.SIGKILL
    assert [t.state for t in trials_of(storage, "killed")] == [TrialState.RUNNING]
    time.sleep(3)  # past the grace period: the next worker fails the silent trial and queues its retry

    assert interrupt_in_trial(args, out / "trial-1", signal.SIGINT) == 130  # Ctrl-C in the retry of trial 0
    trials = trials_of(storage, "killed")
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]
    assert [t.system_attrs.get("failed_trial") for t in trials] == [None, 0, 0]

    sweep(*args[1:])
    trials = trials_of(storage, "killed")
    assert completed_points(trials) == [0, 1]
    assert trials[2].state == TrialState.COMPLETE and trials[2].params == trials[0].params


# ------------------------------------------------------------------------------------------- queue, pruning


def test_queue_drains_in_order(dataset_root, tmp_path, webhook):
    url, received = webhook
    configs = [write(tmp_path / f"{name}.yaml", f"_base_: [{DEMO}]\nname: {name}\ntrainer: {{seed: {seed}}}\n")
               for name, seed in (("first", 1), ("second", 2))]
    with open(configs[1], "a") as f:  # a literal URL: redacted in the study, still the one the worker posts to
        f.write(f"logging: {{notify: {{webhook: '{url}', events: [end]}}}}\n")
    out = tmp_path / "queue"
    assert sweep_main("--queue", *configs, "--study", "queue", "--out", str(out),
                      *sets(dataset_root, tmp_path / "cache")) == 0  # one worker: in this process
    assert [m["event"] for m in received] == ["end"] and "second" in received[0]["text"]
    assert files_containing(tmp_path, "T000-SECRET-TOKEN") == [Path(configs[1])]  # not in study.db nor the trial
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "queue")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert [t.user_attrs["queue_name"] for t in trials] == configs
    assert trials[0].datetime_complete <= trials[1].datetime_start
    assert [json.loads(line)["lr"] for line in (out / "trial-0" / "metrics.jsonl").read_text().splitlines()]
    assert "seed: 2" in (out / "trial-1" / "config.yaml").read_text()


def test_a_pruned_trial_is_recorded_as_pruned(dataset_root, tmp_path):
    from campaign.report import rows

    assert isinstance(studies.build_pruner("median"), optuna.pruners.MedianPruner)
    overrides = tiny_overrides(dataset_root, tmp_path / "cache") + ["trainer.epochs=3", "data.image_size=32"]
    space = load_space(write(tmp_path / "space.yaml", "trainer.seed: {grid: [1]}"), DEMO, overrides)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    studies.create_or_join("pruned", studies.open_storage(storage), {"kind": "space", "space": space.describe()})
    campaign = Campaign("pruned", storage, str(tmp_path / "runs"), DEMO, overrides, space, heartbeat=None)
    counts = run_worker(campaign, pruner=optuna.pruners.ThresholdPruner(lower=1.1))  # any Dice is below 1.1
    trial = trials_of(storage, "pruned")[0]
    assert counts == {"pruned": 1} and trial.state == TrialState.PRUNED and trial.user_attrs["epochs"] == 1
    assert len((tmp_path / "runs" / "trial-0" / "metrics.jsonl").read_text().splitlines()) == 1
    _, table = rows(optuna.load_study(study_name="pruned", storage=storage))
    assert table[0]["state"] == "pruned" and table[0]["val_dice"] == best_dice(table[0]["run_dir"])


# ------------------------------------------------------------------------------------------- PostgreSQL


@pytest.fixture
def postgres_url(postgres_bin):
    """A throw-away PostgreSQL server on 127.0.0.1 (the system's binaries, run as the postgres user when root)."""
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user and not has_user("postgres"):
        unavailable("the PostgreSQL server refuses to run as root and there is no 'postgres' user to run it as: "
                    "apt-get install postgresql creates one")
    data = Path(tempfile.mkdtemp(prefix="sweep-pg-"))
    if as_user:
        shutil.chown(data, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg = [*as_user, str(postgres_bin / "pg_ctl"), "-D", str(data / "db"), "-w"]
    try:
        subprocess.run([*as_user, str(postgres_bin / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*pg, "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-l", str(data / "log"),
                        "start"], check=True, capture_output=True, timeout=120)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg, "-m", "immediate", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)


def has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def test_two_machines_share_only_a_postgresql_url(postgres_url, dataset_root, tmp_path):
    space = write(tmp_path / "space.yaml", "trainer.seed: {grid: [1, 2]}")
    machines = []
    for name in ("a", "b"):  # separate folders and caches: nothing in common but the URL
        args = ["--config", DEMO, "--space", space, "--study", "pg", "--storage", postgres_url,
                "--out", str(tmp_path / name), *sets(dataset_root, tmp_path / f"cache-{name}")]
        machines.append(subprocess.Popen([sys.executable, "sweep.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True))
    logs = [m.communicate(timeout=600)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], logs
    trials = trials_of(postgres_url, "pg")
    assert completed_points(trials) == [0, 1] and all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(Path(t.user_attrs["run_dir"]).parent.name for t in trials) in (["a", "b"], ["a", "a"], ["b", "b"])


# ------------------------------------------------------------------------------------------- shipped spaces


@pytest.mark.parametrize("space_file", sorted((ROOT / "configs" / "sweeps").rglob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_spaces_build_every_value(space_file):
    """Beyond the schema: each value's encoder exists, and its transforms, loss, optimizer and schedule build."""
    import segmentation_models_pytorch as smp
    import torch

    from losses.factory import build_loss
    from schedulers.factory import Schedule
    from trainer.optim import build_optimizer
    from transforms.cpu import build_cpu_transforms
    from transforms.gpu import build_gpu_transforms
    from utils.config import load_config

    base = DEMO if space_file.parent.name == "synthetic" else str(ROOT / "configs" / "unetpp_lion_1024.yaml")
    space = load_space(space_file, base)
    encoders = set(smp.encoders.get_encoder_names())
    for dim in space.dimensions:
        for value in dim.probes():
            cfg = load_config(base, [f"{dim.key}={json.dumps(value)}"])
            assert cfg.model.encoder in encoders, (space_file, value)
            build_cpu_transforms(cfg.transforms.train, "transforms.train")
            build_gpu_transforms(cfg.transforms.gpu, "transforms.gpu")
            build_loss(cfg.loss, cfg.task.mode)
            Schedule(build_optimizer(cfg.optimizer, torch.nn.Linear(1, 1)), cfg.scheduler, 10, cfg.trainer.epochs)
