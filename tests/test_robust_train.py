"""Nothing silently wrong in training: validated numbers, NaN/inf guard, finite checkpoints only, run directories
that never mix two runs, metrics never ahead of the checkpoint, one-line errors for full disks."""
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from tests.conftest import ROOT, tiny_overrides
from tests.system import unavailable
from trainer import checkpoint as checkpoint_module
from trainer import trainer as trainer_module
from trainer.checkpoint import check_finite, load_checkpoint, save_checkpoint
from trainer.rundir import prepare_run_dir, truncate_metrics
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import load_config
from utils.errors import ConfigError, UserError

DEMO = str(ROOT / "configs" / "demo.yaml")


@pytest.mark.parametrize("override, key", [
    ("optimizer.lr=.inf", "optimizer.lr"), ("optimizer.lr=.nan", "optimizer.lr"), ("data.std=0", "data.std"),
    ("data.std=-0.5", "data.std"), ("data.mean=.nan", "data.mean"), ("optimizer.weight_decay=-1", "optimizer.weight_decay"),
    ("trainer.grad_clip=0", "trainer.grad_clip"), ("trainer.threshold=1.5", "trainer.threshold"),
    ("trainer.threshold=.nan", "trainer.threshold"), ("predict.overlap=.nan", "predict.overlap"),
    ("averaging.ema_decay=1", "averaging.ema_decay"), ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs"),
    ("scheduler.warmup_start_factor=0", "scheduler.warmup_start_factor"),
    ("optimizer.params={betas: [.nan, 0.99]}", "optimizer.params.betas[0]"),
    ("trainer.max_nonfinite_steps=0", "trainer.max_nonfinite_steps"), ("averaging.swa_lr=-1", "averaging.swa_lr"),
    ("loss.terms=[{name: bce, weight: -1}]", "loss.terms[0].weight"), ("predict.batch_size=0", "predict.batch_size"),
])
def test_out_of_range_numbers_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=re.escape(key) + ": must"):
        load_config(DEMO, [override])


def fit(cfg, run_dir):
    return Trainer(cfg, run_dir, setup_runtime(cfg.trainer), progress=False).fit()


def test_nonfinite_losses_skip_steps_then_stop(tiny_config, tmp_path):
    """A NaN loss never reaches the weights; a run of them stops with the epoch, step and likely cause."""
    trainer = Trainer(tiny_config("trainer.max_nonfinite_steps=3"), tmp_path / "run",
                      setup_runtime(tiny_config().trainer), progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    loss_fn = trainer.loss_fn
    trainer.loss_fn = lambda logits, y: loss_fn(logits, y) * float("nan")
    with pytest.raises(UserError, match=r"epoch 2, step 1: 3 consecutive .* Likely cause: .*optimizer.lr=0.001"):
        trainer.fit()
    params = dict(trainer.model.named_parameters())
    for key, value in before.items():  # skipped steps: the parameters did not move
        if key in params:
            assert torch.equal(value, params[key].detach()), key
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and records[0]["nonfinite_steps"] == 2
    check_finite(load_checkpoint(tmp_path / "run" / "best.pt"), "best.pt")  # what was saved is finite


def test_diverging_config_exits_nonzero_without_a_nan_checkpoint(dataset_root, tmp_path, capsys):
    """An absurd learning rate (finite, so the config allows it) blows the weights up: exit 2, one line, no NaN
    checkpoint anywhere."""
    args = ["--config", DEMO, "--out", str(tmp_path / "run"), "--no-progress"]
    for item in tiny_overrides(dataset_root, tmp_path / "cache") + ["optimizer.lr=1e30", "trainer.max_nonfinite_steps=2"]:
        args += ["--set", item]
    with pytest.raises(SystemExit) as stop:
        from utils.cli import run_main
        run_main(lambda: train.main(args))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: epoch ") and "Likely cause" in err and "\n" not in err
    for path in (tmp_path / "run").glob("*.pt"):
        check_finite(load_checkpoint(path), path)
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_nan_checkpoint_is_refused_by_every_loader(tiny_checkpoint, dataset_root, tmp_path):
    import ensemble
    import inference
    import pseudo_label

    state = torch.load(tiny_checkpoint, weights_only=True)
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    bad = tmp_path / "nan.pt"
    torch.save(state, bad)
    message = f"{bad}: model weight '{name}' holds NaN or inf"
    with pytest.raises(UserError, match=message):
        inference.main(["--checkpoint", str(bad), "--out", str(tmp_path / "a.csv"), "--data", str(dataset_root)])
    with pytest.raises(UserError, match=message):
        ensemble.main(["--checkpoints", str(bad), "--out", str(tmp_path / "b.csv"), "--data", str(dataset_root)])
    with pytest.raises(UserError, match=message):
        pseudo_label.main(["--checkpoints", str(bad), "--out", str(tmp_path / "p"), "--data", str(dataset_root)])
    assert not list(tmp_path.glob("*.csv")) and not (tmp_path / "p").exists()
    last = torch.load(tiny_checkpoint.parent / "last.pt", weights_only=True)
    last["model"][name] = torch.full_like(last["model"][name], float("inf"))
    torch.save(last, tmp_path / "last.pt")
    with pytest.raises(UserError, match=f"{tmp_path / 'last.pt'}: model weight '{name}' holds NaN or inf"):
        train.main(["--resume", str(tmp_path / "last.pt"), "--set", f"data.cache_dir={tmp_path / 'cache'}",
                    "--no-progress"])


def test_best_holds_inference_state_only(tiny_checkpoint):
    best = torch.load(tiny_checkpoint, weights_only=True)
    last = torch.load(tiny_checkpoint.parent / "last.pt", weights_only=True)
    assert "optimizer" not in best and "scaler" not in best and {"model", "config", "classes", "metrics"} <= set(best)
    assert "optimizer" in last and "schedule" in last


@pytest.mark.parametrize("threshold", ["1.5", "-0.5", "nan", "0", "1"])
def test_bad_cli_thresholds_fail_before_any_work(threshold, tmp_path):
    import ensemble
    import inference
    import pseudo_label

    missing = str(tmp_path / "missing.pt")  # never reached: the threshold is checked first
    for main, args in ((inference.main, ["--checkpoint", missing]), (ensemble.main, ["--checkpoints", missing]),
                       (pseudo_label.main, ["--checkpoints", missing, "--out", str(tmp_path / "p")])):
        with pytest.raises(UserError, match=r"--threshold: threshold .* must be a number strictly between 0 and 1"):
            main(args + ["--threshold", threshold])


@pytest.mark.parametrize("content, message", [
    ('{"thresholds": {"Radius": 1.5}}', "class 'Radius': threshold 1.5 must be"),
    ('{"Radius": -0.5}', "class 'Radius': threshold -0.5 must be"),
    ('{"Radius": NaN}', "class 'Radius': threshold nan must be"),
    ('{"Radius": "0.5"}', "class 'Radius': threshold '0.5' is not a number"),
    ('{"Radius": true}', "class 'Radius': threshold True is not a number"),
    ('[0.5, 0.5]', "expected a mapping"),
    ('{"thresholds": [0.5]}', "expected a mapping"),
    ('{"Ulna": 0.5}', "no threshold for class 'Radius'"),
    ('{"Radius": 0.5', "unreadable thresholds JSON"),
])
def test_bad_threshold_files(content, message, tmp_path):
    from trainer.inference import parse_thresholds

    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(UserError, match=f"{path}: .*{message}" if "unreadable" in message else message):
        parse_thresholds(0.5, str(path), ["Radius"])
    assert parse_thresholds(0.5, None, ["Radius"]).tolist() == [0.5]


def test_threshold_file_checked_before_prediction(tiny_checkpoint, dataset_root, tmp_path):
    import inference

    path = tmp_path / "t.json"
    path.write_text(json.dumps({c: 2.0 for c in load_checkpoint(tiny_checkpoint)["classes"]}))
    with pytest.raises(UserError, match=r"threshold 2.0 must be"):
        inference.main(["--checkpoint", str(tiny_checkpoint), "--thresholds", str(path), "--data", str(dataset_root),
                        "--out", str(tmp_path / "s.csv")])
    assert not (tmp_path / "s.csv").exists()


def test_arguments_checked_before_work(tiny_checkpoint, dataset_root, tmp_path):
    import inference

    base = ["--checkpoint", str(tiny_checkpoint), "--data", str(dataset_root)]
    with pytest.raises(UserError, match=r"--out .*: the folder .*missing does not exist"):
        inference.main(base + ["--out", str(tmp_path / "missing" / "s.csv")])
    with pytest.raises(UserError, match=r"--out .*: is a folder"):
        inference.main(base + ["--out", str(tmp_path)])
    with pytest.raises(UserError, match=r"--workers: must be 0 .* got -1"):
        inference.main(base + ["--workers", "-1"])


def test_run_dir_refused_unless_resume_or_overwrite(tmp_path):
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    (run / "wandb" / "offline-run").mkdir(parents=True)
    for name in ("metrics.jsonl", "best.pt", "fold0/last.pt", "notes.txt", "events.out.tfevents.1.host",
                 "wandb/offline-run/run.wandb"):
        (run / name).write_text("x")
    with pytest.raises(UserError, match=f"{run}: run directory is not empty .*--resume .*--overwrite"):
        prepare_run_dir(run, resume=False, overwrite=False)
    assert prepare_run_dir(run, resume=True, overwrite=False) == run and (run / "best.pt").exists()
    prepare_run_dir(run, resume=False, overwrite=True)
    assert sorted(p.name for p in run.rglob("*")) == ["notes.txt"]  # only the framework's own files go
    prepare_run_dir(tmp_path / "new", resume=False, overwrite=False)
    with pytest.raises(UserError, match="--resume and --overwrite"):
        train.main(["--resume", "x.pt", "--overwrite"])


def test_truncate_metrics_to_the_resumed_epoch(tmp_path):
    lines = [json.dumps({"epoch": e}) for e in (1, 2, 3)] + ['{"epoch": 4, "val']  # the last one cut by a kill
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    truncate_metrics(tmp_path, 2)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_train_cli_run_dir_resume_and_run_info(dataset_root, tmp_path):
    """A second run into the same --out is refused; a resume from an old last.pt truncates metrics.jsonl (no epoch
    twice); run_info.json records the command, git and package versions; another arch on --resume: one line."""
    out = tmp_path / "run"
    common = ["--no-progress"]
    for item in tiny_overrides(dataset_root, tmp_path / "cache") + ["trainer.epochs=1"]:
        common += ["--set", item]
    assert train.main(["--config", DEMO, "--out", str(out), *common]) == 0
    info = json.loads((out / "run_info.json").read_text())
    assert info["command"][1:3] == ["train.py", "--config"] and "torch" in info["packages"]
    assert info["git"] is None or len(info["git"]["commit"]) == 40
    with pytest.raises(UserError, match="run directory is not empty"):
        train.main(["--config", DEMO, "--out", str(out), *common])
    with pytest.raises(UserError, match=r"trained with model.arch='Unet', the config asks for 'FPN'"):
        train.main(["--config", DEMO, "--resume", str(out / "last.pt"), *common, "--set", "model.arch=FPN"])

    # a run killed after a metrics line its checkpoint never saw (older code wrote metrics first)
    with (out / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 1.0}) + "\n")
    state = torch.load(out / "last.pt", weights_only=True)
    state["config"]["trainer"]["epochs"] = 2
    torch.save(state, out / "last.pt")
    assert train.main(["--resume", str(out / "last.pt"), *common[:1]]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


def fail_with_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_checkpoint_full_disk_fault_injection(tmp_path, monkeypatch):
    """torch.save failing half-way: one-line error naming the file and the reason, no temporary file left."""
    def half_write(state, f):
        f.write(b"partial")
        fail_with_enospc()

    monkeypatch.setattr(checkpoint_module.torch, "save", half_write)
    target = tmp_path / "best.pt"
    with pytest.raises(UserError, match=f"^{target}: cannot write \\(No space left on device\\)$"):
        save_checkpoint({"model": {}}, target)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_checkpoint_write_stays_a_ctrl_c(tmp_path, monkeypatch):
    """torch.save turns a KeyboardInterrupt inside its zip writer into a RuntimeError on exit; the caller (a sweep
    worker re-queueing its trial, run_main's exit status 130) must still see the Ctrl-C, and no temporary is left."""
    def interrupted_write(state, f):
        try:
            f.write(b"partial")
            raise KeyboardInterrupt
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1 vs 0")

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"model": {}}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_right_after_a_checkpoint_is_renamed_names_the_epoch_the_file_holds(tiny_config, tmp_path, monkeypatch):
    """The Ctrl-C message reads the epoch from last.pt itself: a signal landing just after the rename of epoch 2's
    last.pt (before the trainer could note it) must not send the user to resume "epoch 1"."""
    def save_then_interrupt(state, path):
        save_checkpoint(state, path)
        if Path(path).name == "last.pt" and state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_interrupt)
    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match=rf"^{re.escape(str(run_dir / 'last.pt'))} kept \(epoch 2\);"):
        fit(tiny_config("trainer.epochs=3"), run_dir)


def test_stale_temporary_files_of_killed_writers_are_removed(tmp_path):
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    stale = [tmp_path / "best.pt.tmp", tmp_path / f"best.pt.{pid_max + 1}.tmp"]
    live = tmp_path / f"best.pt.{os.getppid()}.tmp"  # a running process's: kept
    for path in [*stale, live]:
        path.write_bytes(b"half")
    save_checkpoint({"model": {}, "config": {}}, tmp_path / "best.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pt", live.name])


def test_checkpoint_on_a_read_only_disk(tmp_path):
    """A read-only file system (a tmpfs mounted ro, so that it holds for root too): one line, the OS reason."""
    folder = tmp_path / "ro"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root with mount permission")
    try:
        with pytest.raises(UserError, match=rf"^{folder}/last.pt: cannot write \(Read-only file system\)$"):
            save_checkpoint({"model": {}}, folder / "last.pt")
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root and mount permission); skipped where it cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}): needs root with mount permission")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_training_on_a_full_disk(tiny_config, small_tmpfs):
    """A real full disk: the checkpoint write fails with one line, no .tmp left, and metrics.jsonl is not ahead."""
    run = small_tmpfs / "run"
    with pytest.raises(UserError, match=f"{run}/best.pt: cannot write \\(No space left on device\\)"):
        fit(tiny_config("trainer.epochs=1"), run)
    assert not list(run.glob("*.tmp")) and not (run / "metrics.jsonl").exists()


def test_one_line_for_worker_errors():
    from utils.cli import one_line
    from utils.errors import DataError

    wrapped = DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call "
                        "last):\n  File \"x.py\", line 1\nutils.errors.DataError: /t/a.png: missing or unreadable image\n")
    assert one_line(wrapped) == "/t/a.png: missing or unreadable image"


def test_subprocess_exit_status_for_bad_threshold(tmp_path):
    run = subprocess.run([sys.executable, "inference.py", "--checkpoint", "x.pt", "--threshold", "nan"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: --threshold: threshold nan must be a number strictly between 0 and 1"


def test_metrics_never_ahead_of_the_checkpoint(tiny_config, tmp_path, monkeypatch):
    """The disk fills while epoch 2's last.pt is written: one line naming it, metrics.jsonl stops at epoch 1, the
    epoch-1 checkpoint is intact, no temporary file is left."""
    import trainer.trainer as trainer_module

    real_save, calls = trainer_module.save_checkpoint, []

    def save(state, path):
        calls.append(path.name)
        if path.name == "last.pt" and calls.count("last.pt") == 2:
            with checkpoint_module.atomic_path(path) as tmp:
                tmp.write_bytes(b"half")
                fail_with_enospc()
        real_save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save)
    run = tmp_path / "run"
    with pytest.raises(UserError, match=rf"^{run}/last.pt: cannot write \(No space left on device\)$"):
        fit(tiny_config("trainer.epochs=2"), run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and load_checkpoint(run / "last.pt")["epoch"] == 0
    assert not list(run.glob("*.tmp"))
