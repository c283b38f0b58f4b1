import pytest
import yaml

from tests.conftest import ROOT
from utils.config import Config, from_dict, load_config, save_config, to_dict
from utils.errors import ConfigError

SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_validate(path):
    cfg = load_config(path)
    assert len(cfg.task.classes) == {"handbone": 29, "coco": 11, "folders": 21}[cfg.task.format] and cfg.name == path.stem


def test_inheritance_later_keys_override(tmp_path):
    write(tmp_path / "a.yaml", {"task": {"classes": ["x", "y"]}, "optimizer": {"name": "adam", "lr": 0.1},
                                "data": {"image_size": 64}})
    write(tmp_path / "b.yaml", {"optimizer": {"lr": 0.2, "weight_decay": 0.5}})
    write(tmp_path / "c.yaml", {"_base_": ["a.yaml", "b.yaml"], "optimizer": {"lr": 0.3}})
    cfg = load_config(tmp_path / "c.yaml")
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 0.3 and cfg.optimizer.weight_decay == 0.5
    assert cfg.data.image_size == 64 and cfg.task.classes == ["x", "y"]
    assert cfg.data.batch_size == Config().data.batch_size  # untouched keys keep the schema default


def test_nested_base_and_cycle(tmp_path):
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "base.yaml", {"task": {"classes": ["a"]}})
    write(tmp_path / "mid.yaml", {"_base_": "sub/base.yaml", "trainer": {"epochs": 3}})
    write(tmp_path / "top.yaml", {"_base_": ["mid.yaml"]})
    assert load_config(tmp_path / "top.yaml").trainer.epochs == 3
    write(tmp_path / "loop.yaml", {"_base_": ["loop.yaml"]})
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "loop.yaml")


def test_overrides_are_parsed_as_yaml(tmp_path):
    write(tmp_path / "a.yaml", {"task": {"classes": ["x"]}})
    cfg = load_config(tmp_path / "a.yaml", ["optimizer.lr=3e-4", "model.encoder=resnet50", "trainer.grad_clip=null",
                                            "transforms.train=[{name: HorizontalFlip, p: 0.5}]", "trainer.amp=bf16"])
    assert cfg.optimizer.lr == 3e-4 and cfg.model.encoder == "resnet50" and cfg.trainer.grad_clip is None
    assert cfg.transforms.train == [{"name": "HorizontalFlip", "p": 0.5}] and cfg.trainer.amp == "bf16"


@pytest.mark.parametrize("override, message", [
    ("optimizer.lrr=1", "unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("traner.epochs=1", "unknown key 'traner' (did you mean 'trainer'?)"),
    ("trainer.epochs=ten", "trainer.epochs: expected an integer, got str 'ten'"),
    ("trainer.epochs=2.5", "trainer.epochs: expected an integer"),
    ("trainer.channels_last=3", "trainer.channels_last: expected true or false"),
    ("trainer.amp=fp8", "trainer.amp: 'fp8' is not one of 'off', 'bf16', 'fp16'"),
    ("loss.terms=[{name: bce, wieght: 1}]", "unknown key 'loss.terms[0].wieght' (did you mean 'loss.terms[0].weight'?)"),
    ("data.fold=7", "data.fold: 7 is out of range for data.n_splits=5"),
    ("task.classes=[]", "task.classes: the class list is empty"),
    ("data", "expected KEY.PATH=VALUE"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs" / "demo.yaml", [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(ROOT / "configs" / "unetpp_lion_1024.yaml", ["trainer.epochs=3"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = from_dict(yaml.safe_load((tmp_path / "resolved.yaml").read_text()))
    assert to_dict(again) == to_dict(cfg)
