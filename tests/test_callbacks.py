"""The trainer's observer interface: events in order, a failing observer dropped with a warning, StopTraining."""
import pytest

from trainer.callbacks import Callback, StopTraining
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_start(self, trainer):
        self.events.append("start")

    def on_epoch_end(self, trainer, record):
        self.events.append(("epoch", record["epoch"], record["val_dice"] is not None))

    def on_best(self, trainer, record):
        self.events.append(("best", record["epoch"]))

    def on_end(self, trainer, result):
        self.events.append(("end", result["epochs"], result["stopped_by"]))

    def on_crash(self, trainer, error):
        self.events.append(("crash", type(error).__name__))


class Broken(Callback):
    name = "broken-backend"

    def __init__(self):
        self.calls = 0

    def on_epoch_end(self, trainer, record):
        self.calls += 1
        raise ConnectionError("server went away")


class StopAfterFirst(Callback):
    def on_epoch_end(self, trainer, record):
        raise StopTraining("pruned")


def test_events_in_order_and_a_failing_observer_is_dropped(tiny_config, tmp_path, capsys):
    cfg = tiny_config("trainer.epochs=2")
    recorder, broken = Recorder(), Broken()
    result = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False,
                     callbacks=[broken, recorder]).fit()
    assert recorder.events[0] == "start" and recorder.events[-1] == ("end", 2, None)
    assert ("epoch", 1, True) in recorder.events and ("epoch", 2, True) in recorder.events
    assert ("best", 1) in recorder.events
    assert broken.calls == 1  # warned once, then left out
    err = capsys.readouterr().err
    assert err.count("broken-backend failed in on_epoch_end") == 1 and "server went away" in err
    assert result["epochs"] == 2


def test_stop_training_ends_after_the_epoch(tiny_config, tmp_path):
    cfg = tiny_config("trainer.epochs=3")
    recorder = Recorder()
    result = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False,
                     callbacks=[StopAfterFirst(), recorder]).fit()
    assert result["epochs"] == 1 and result["stopped_by"] == "pruned"
    assert recorder.events[-1] == ("end", 1, "pruned")
    assert (tmp_path / "run" / "last.pt").is_file()


def test_crash_is_reported_then_raised(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("trainer.epochs=1")
    recorder = Recorder()
    trainer = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False, callbacks=[recorder])

    def explode(epoch):
        raise RuntimeError("boom")

    monkeypatch.setattr(trainer, "_train_epoch", explode)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit()
    assert recorder.events == ["start", ("crash", "RuntimeError")]
