"""Tracking backends read back with their own readers, webhook notifications, and the secret kept out of files."""
import json
import socket

import pytest

from tests.conftest import SECRET, files_containing
from tracking import checks
from tracking.build import build_tracking
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.errors import ConfigError


def fit(cfg, run_dir):
    """As train.py runs it: the tracking callbacks built by the caller, handed to the Trainer."""
    return Trainer(cfg, run_dir, setup_runtime(cfg.trainer), progress=False,
                   callbacks=build_tracking(cfg, run_dir)).fit()


def test_backends_read_back_and_webhook(tiny_config, tmp_path, webhook, monkeypatch):
    from mlflow import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    url, received = webhook
    monkeypatch.setenv("TEST_HOOK_URL", url)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: wandb goes offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tiny_config("logging.backends=[tensorboard, mlflow, wandb]", "logging.image_every=1",
                      "logging.notify={webhook: '${TEST_HOOK_URL}', events: [start, end, best]}")
    run_dir = tmp_path / "runs" / "tiny"
    result = fit(cfg, run_dir)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0}).Reload()
    assert [e.value for e in events.Scalars("val_dice")] == pytest.approx([r["val_dice"] for r in records])
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    assert events.Scalars("val_dice/Radius")[-1].value == pytest.approx(records[-1]["val_dice_per_class"]["Radius"])
    image_tags = events.Tags()["images"]
    assert len(image_tags) == 3 and all(len(events.Images(t)) == 2 for t in image_tags)

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name(cfg.logging.wandb_project).experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny" and run.data.tags["config"] == cfg.name
    assert run.data.params["optimizer.lr"] == "0.001" and run.data.params["data.image_size"] == "64"
    history = client.get_metric_history(run.info.run_id, "val_dice")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([r["val_dice"] for r in records])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overlays"} <= artifacts and "best.pt" not in artifacts  # no second copy by default
    assert run.data.tags["best_checkpoint"] == str((run_dir / "best.pt").resolve())
    assert len(client.list_artifacts(run.info.run_id, "overlays")) == 6
    assert run.info.artifact_uri.startswith((tmp_path / "runs" / "mlartifacts").as_uri())

    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))

    assert received[0]["event"] == "start" and received[-1]["event"] == "end"  # the words of logging.notify.events
    assert "best" in [m["event"] for m in received] and "finished" in received[-1]["text"]
    assert received[-1]["best_dice"] == pytest.approx(result["best_dice"], abs=1e-4)
    assert cfg.name in received[-1]["text"] and received[-1]["epoch"] == 2
    assert files_containing(tmp_path, "T000-SECRET-TOKEN") == []


def test_dead_webhook_and_failing_backend_do_not_stop_training(tiny_config, tmp_path, capfd, monkeypatch):
    """A webhook that never answers, given as a literal URL (redacted in every saved file), and an MLflow server
    that is not there: each is warned about, and training runs to the end."""
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(8)  # accepts connections into the backlog, never answers
    url = SECRET.format(port=hanging.getsockname()[1])
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = tiny_config("trainer.epochs=1", "logging.backends=[mlflow]", "logging.mlflow_uri=http://127.0.0.1:9",
                      f"logging.notify={{webhook: '{url}', events: [start, end]}}")
    result = fit(cfg, tmp_path / "run")
    hanging.close()
    assert result["epochs"] == 1 and (tmp_path / "run" / "best.pt").is_file()
    err = capfd.readouterr().err
    assert "warning: mlflow failed in on_start and is turned off for this run" in err
    assert "warning: notification not sent (TimeoutError" in err or "timed out" in err
    assert "webhook: <redacted>" in (tmp_path / "run" / "config.yaml").read_text()
    assert files_containing(tmp_path, "T000-SECRET-TOKEN") == []


def test_crash_is_notified_with_the_last_line(tiny_config, tmp_path, webhook, monkeypatch):
    url, received = webhook
    monkeypatch.setenv("TEST_HOOK_URL", url)

    def fail(*args, **kwargs):
        raise RuntimeError("CUDA error\nout of memory")

    monkeypatch.setattr(Trainer, "train_step", fail)
    with pytest.raises(RuntimeError):
        fit(tiny_config("logging.notify={webhook: '${TEST_HOOK_URL}', events: [crash]}"), tmp_path / "run")
    assert [m["event"] for m in received] == ["crash"]
    assert received[0]["error"] == "RuntimeError: out of memory" and "out of memory" in received[0]["text"]


def test_missing_package_fails_before_any_work(dataset_root, tmp_path, monkeypatch):
    import train
    from tests.conftest import ROOT, tiny_overrides

    monkeypatch.setitem(checks.BACKENDS, "wandb", ("tracking.wandb_backend", "WandbBackend", "no_such_package_x"))
    sets = [a for item in tiny_overrides(dataset_root, tmp_path / "cache") + ["logging.backends=[wandb]"]
            for a in ("--set", item)]
    with pytest.raises(ConfigError, match=r"logging\.backends: wandb needs the no_such_package_x package"):
        train.main(["--config", str(ROOT / "configs" / "demo.yaml"), "--out", str(tmp_path / "run"), *sets])
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()


def test_backends_only_on_rank_zero(tiny_config, tmp_path):
    cfg = tiny_config("logging.backends=[tensorboard, mlflow]")
    assert build_tracking(cfg, tmp_path, is_main=False) == []
    assert [b.name for b in build_tracking(cfg, tmp_path, is_main=True)] == ["tensorboard", "mlflow"]


def test_unset_webhook_variable_is_a_config_error(tiny_config, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_HOOK", raising=False)
    with pytest.raises(ConfigError, match="environment variable NO_SUCH_HOOK is not set"):
        fit(tiny_config("logging.notify={webhook: '${NO_SUCH_HOOK}'}"), tmp_path / "run")


def test_old_wandb_key_still_loads(tiny_config):
    from utils.config import from_dict, to_dict

    raw = to_dict(tiny_config())
    raw["logging"] = {"wandb": True, "wandb_project": "p"}  # as saved in checkpoints before logging.backends
    assert from_dict(raw).logging.backends == ["wandb"]
    raw["logging"] = {"wandb": False}
    assert from_dict(raw).logging.backends == []
