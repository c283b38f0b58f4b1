"""Hostile inputs and faults at every entry point (issue #17): each ends with a one-line error naming the input and
the problem (exit status 2), or a counted warning naming what was skipped; never a traceback, a hang, a secret on
disk or a script in a report."""
import errno
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import analyze
import ensemble
import inference
import sweep
import train
import visualize
from analysis.analyze_run import analyze_run
from analysis.compare import write_comparison
from campaign.report import html_text
from losses.factory import build_loss
from models.factory import build_model
from tasks.registry import build_task
from tests.conftest import ROOT, tiny_overrides
from trainer.checkpoint import load_checkpoint
from trainer.inference import ProbsMember, load_probs_member
from trainer.rundir import write_run_info
from utils import files
from utils.cli import run_main
from utils.config import LossConfig, LossTerm, ModelConfig, load_config
from utils.errors import ConfigError, DataError, UserError
from utils.files import atomic_folder

DEMO = str(ROOT / "configs" / "demo.yaml")


def cli_error(main, argv: list[str], capsys) -> str:
    """Run an entry script's main as `python script.py ...` would: exit status 2 and one line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main(argv))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


# ------------------------------------------------------------------------------------------------ config loading


def test_a_key_given_twice_names_the_file_the_key_and_both_lines(tmp_path):
    config = tmp_path / "dup.yaml"
    config.write_text(f"_base_: {DEMO}\noptimizer:\n  lr: 0.001\n  weight_decay: 0\n  lr: 5.0\n")
    with pytest.raises(ConfigError, match=rf"^{config}: key 'lr' is given twice in one mapping \(lines 3 and 5\)"):
        load_config(config)
    base = tmp_path / "base.yaml"
    base.write_text("trainer: {epochs: 1, epochs: 2}\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: [{DEMO}, base.yaml]\n")
    with pytest.raises(ConfigError, match=rf"^{base}: key 'epochs' is given twice .*columns 11 and 22"):
        load_config(child)
    with pytest.raises(ConfigError, match=r"^--set 'optimizer.params=\{eps: 1, eps: 2\}': key 'eps' is given twice"):
        load_config(DEMO, ["optimizer.params={eps: 1, eps: 2}"])


def test_yaml_merge_keys_and_small_aliases_still_load(tmp_path):
    """Anchors are not refused as such: sharing one transform list between train and val is a fair use."""
    config = tmp_path / "anchors.yaml"
    config.write_text(f"_base_: {DEMO}\ntransforms:\n  train: &tf [{{name: CLAHE, p: 1.0}}]\n  val: *tf\n"
                      "optimizer: {<<: {lr: 0.002}, weight_decay: 0.01}\n")
    cfg = load_config(config)
    assert cfg.transforms.val == cfg.transforms.train == [{"name": "CLAHE", "p": 1.0}]
    assert cfg.optimizer.lr == 0.002 and cfg.optimizer.weight_decay == 0.01


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """10^9 leaves in ten lines: expanded by any walk of the tree it would hang or exhaust memory."""
    lines = ["  l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 9)]
    config = tmp_path / "bomb.yaml"
    config.write_text(f"_base_: {DEMO}\noptimizer:\n params:\n" + "\n".join(" " + line for line in lines) + "\n")
    with pytest.raises(ConfigError, match=rf"^{config}: YAML aliases expand to more than 100000 values"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"^--set 'optimizer.params=.*': YAML aliases expand"):
        load_config(DEMO, ["optimizer.params={a: &a [1,1,1,1,1,1,1,1,1,1], b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], "
                           "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], "
                           "e: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]}"])
    recursive = tmp_path / "recursive.yaml"
    recursive.write_text("optimizer: &o {params: *o}\n")
    with pytest.raises(ConfigError, match=rf"^{recursive}: a YAML alias refers to the list or mapping that contains"):
        load_config(recursive)


@pytest.mark.parametrize("make, problem", [
    (lambda p: p.mkdir(), "is a folder, not a YAML config file"),
    (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff"), r"not a YAML text file \(byte 0x89 at offset 0"),
])
def test_a_config_or_base_that_is_a_folder_or_binary(tmp_path, make, problem):
    bad = tmp_path / "bad.yaml"
    make(bad)
    with pytest.raises(ConfigError, match=rf"^{bad}: {problem}"):
        load_config(bad)
    child = tmp_path / "child.yaml"
    child.write_text(f"_base_: [{DEMO}, bad.yaml]\n")
    with pytest.raises(ConfigError, match=rf"^{bad}: {problem}"):
        load_config(child)


@pytest.mark.parametrize("override, key", [
    ("data.image_size=20000", "data.image_size"), (f"data.image_size={10 ** 30}", "data.image_size"),
    ("predict.window=32768", "predict.window"), ("data.synthetic.size=100000", "data.synthetic.size"),
])
def test_sizes_beyond_any_image_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=rf"{key}: must be at most 16384 pixels, got"):
        load_config(DEMO, [override])


@pytest.mark.parametrize("betas", ["[0.9]", "[0.9, 0.99, 0.5]", "[0.9, x]", "0.9", "[0.9, 1.5]"])
def test_optimizer_betas_of_the_wrong_shape(betas):
    with pytest.raises(ConfigError, match=r"optimizer.params.betas: expected two numbers in \[0, 1\), got"):
        load_config(DEMO, [f"optimizer.params={{betas: {betas}}}"])


def test_a_wrong_optimizer_keyword_fails_before_the_data_is_touched(tiny_config, tmp_path, monkeypatch):
    import trainer.trainer as trainer_module
    from trainer.runtime import setup_runtime

    def no_data(*args, **kwargs):
        raise AssertionError("the data was prepared before the optimizer was checked")

    monkeypatch.setattr(trainer_module, "prepare_fold", no_data)
    cfg = tiny_config("optimizer.params={momentum: 0.9}")  # Adam has no momentum
    with pytest.raises(ConfigError, match=r"^optimizer.params: .*momentum"):
        trainer_module.Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False)


def test_synthetic_size_from_a_config_names_the_config_key(tmp_path, classes):
    cfg = load_config(DEMO, [f"data.root={tmp_path / 'hands'}", "data.synthetic.size=64"])
    with pytest.raises(UserError, match=r"^data.synthetic.size must be >= 128, got 64$"):
        build_task(cfg).layout.ensure(cfg.data, progress=False)
    trash = load_config(ROOT / "configs" / "trash_demo.yaml", [f"data.root={tmp_path / 'trash'}",
                                                                "data.synthetic.ids=1"])
    with pytest.raises(UserError, match=r"^data.synthetic.ids must be >= 2, got 1$"):
        build_task(trash).layout.ensure(trash.data, progress=False)
    from tasks.handbone.synthetic import main as synthetic_main
    with pytest.raises(UserError, match=r"^--size must be >= 128, got 64$"):
        synthetic_main(["--out", str(tmp_path / "cli"), "--size", "64"])


# ------------------------------------------------------------------------------------------------ weights, checkpoints


class RunsCode:
    """A pickle that would write a file when loaded with weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def small_model_config(weights: Path) -> ModelConfig:
    return ModelConfig(arch="Unet", encoder="resnet18", encoder_weights=str(weights),
                       params={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})


def test_pickled_code_in_encoder_weights_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran.txt"
    for name, write in [("zip.pt", lambda p: torch.save({"encoder.x": RunsCode(marker)}, p)),
                        ("plain.pth", lambda p: p.write_bytes(pickle.dumps(RunsCode(marker))))]:
        path = tmp_path / name
        write(path)
        with pytest.raises(ConfigError) as info:
            build_model(small_model_config(path), 3)
        assert str(info.value) == (f"{path}: not a weights file torch can load safely (it holds pickled Python "
                                   "objects, refused without running them)")
        assert not marker.exists()


@pytest.mark.parametrize("name, content, message", [
    ("garbage.pth", b"\x00\xfe garbage, no pickle opcode first" * 8, r"not a PyTorch/safetensors weights file \("),
    ("empty.pt", b"", r"not a PyTorch/safetensors weights file \(EOFError\)"),
    ("bad.safetensors", b"\xff" * 64, r"not a safetensors weights file \("),
])
def test_garbage_weight_files_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=rf"^{path}: {message}") as info:
        build_model(small_model_config(path), 3)
    assert "weights_only=False" not in str(info.value) and "\n" not in str(info.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConfigError, match=r"list.pt: holds a list, not a state dict of named tensors"):
        build_model(small_model_config(tmp_path / "list.pt"), 3)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(config=["not", "a", "mapping"]), "'config' is a list"),
    (lambda s: s.update(model=[1]), "'model' is a list"),
    (lambda s: s.update(classes="radius"), "'classes' is a str"),
    (lambda s: s.update(classes=[1, 2]), "'classes' must be a list of class names"),
    (lambda s: s["model"].update(extra="text"), "model entry 'extra' is not a named tensor"),
    (lambda s: s.update(optimizer={}), "training state without 'schedule'"),
])
def test_checkpoints_of_the_wrong_structure(tiny_checkpoint, tmp_path, capsys, change, message):
    state = torch.load(tiny_checkpoint, weights_only=True)
    change(state)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(UserError, match=rf"^{path}: {message}"):
        load_checkpoint(path)
    err = cli_error(inference.main, ["--checkpoint", str(path), "--out", str(tmp_path / "s.csv")], capsys)
    assert message.split(" ")[0] in err
    cli_error(train.main, ["--resume", str(path)], capsys)


# ------------------------------------------------------------------------------------------------ ensemble --probs


def npy_bytes(array: np.ndarray) -> bytes:
    """A plain .npy (not an archive), as if renamed to .npz."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def probs_folder(folder: Path, classes=("a", "b"), maps=None) -> Path:
    folder.mkdir()
    (folder / "probs.json").write_text(json.dumps({"classes": list(classes)}))
    np.savez_compressed(folder / "img.npz", probs=np.zeros((2, 4, 4), np.uint8) if maps is None else maps)
    return folder


@pytest.mark.parametrize("text", ["{\"classes\": [\"a\"", "[\"a\", \"b\"]", "{}", "{\"classes\": [1, 2]}",
                                  "{\"classes\": []}", "\udcff"])
def test_bad_probs_json_is_one_line(tmp_path, text):
    folder = probs_folder(tmp_path / "p")
    (folder / "probs.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(DataError, match=rf"^{folder / 'probs.json'}: "):
        load_probs_member(folder)


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"), "unreadable probability file"),
    (lambda p: np.savez(p, other=np.zeros(3)), "no 'probs' array inside"),
    (lambda p: p.write_bytes(npy_bytes(np.zeros((2, 4, 4), np.uint8))), "no 'probs' array inside"),
    (lambda p: np.savez(p, probs=np.zeros((2, 4, 4), np.float32)), r"expected uint8 maps of shape \(2 classes"),
    (lambda p: np.savez(p, probs=np.zeros((4, 4), np.uint8)), "expected uint8 maps"),
    (lambda p: np.savez(p, probs=np.zeros((3, 4, 4), np.uint8)), r"expected .*, got uint8 \(3, 4, 4\)"),
])
def test_bad_probability_maps_are_one_line(tmp_path, write, message):
    folder = probs_folder(tmp_path / "p")
    write(folder / "img.npz")
    member = load_probs_member(folder)
    assert isinstance(member, ProbsMember)
    with pytest.raises(DataError, match=rf"^{folder / 'img.npz'}: {message}"):
        member.load("img")


def test_ensemble_of_a_bad_probs_folder_exits_with_one_line(dataset_root, tmp_path, capsys, classes):
    folder = tmp_path / "probs"
    folder.mkdir()
    (folder / "probs.json").write_text(json.dumps({"classes": classes}))
    keys = sorted(p.relative_to(dataset_root / "test" / "DCM") for p in (dataset_root / "test" / "DCM").rglob("*.png"))
    for key in keys:
        (folder / key).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / key.with_suffix(".npz"), probs=np.zeros((len(classes) - 1, 8, 8), np.uint8))
    out = tmp_path / "submission.csv"
    err = cli_error(ensemble.main, ["--probs", str(folder), "--data", str(dataset_root), "--out", str(out),
                                    "--workers", "0", "--no-progress"], capsys)
    assert "expected uint8 maps of shape (29 classes of probs.json, h, w), got uint8 (28, 8, 8)" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------------ secrets


def test_the_command_line_is_redacted_in_run_info(tmp_path):
    secret = "https://hooks.example.invalid/T000/SECRET"
    argv = ["train.py", "--set", f"logging.notify.webhook={secret}", f"--set=logging.notify={{webhook: '{secret}'}}",
            "--set", "logging.notify.events=[end]"]
    write_run_info(tmp_path, argv, [secret])
    text = (tmp_path / "run_info.json").read_text()
    assert "SECRET" not in text
    assert json.loads(text)["command"][1:] == ["train.py", "--set", "logging.notify.webhook=<redacted>",
                                               "--set=logging.notify={webhook: '<redacted>'}", "--set",
                                               "logging.notify.events=[end]"]


def test_a_webhook_given_on_the_command_line_is_saved_nowhere(dataset_root, tmp_path, monkeypatch):
    """Trained with wandb (offline): no file of the run directory holds the URL, neither run_info.json nor wandb's
    run file; given as ${ENV_VAR} it is kept as the reference."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: wandb stays offline
    monkeypatch.setenv("WANDB_SILENT", "true")
    secret = "http://127.0.0.1:9/hooks/T000/B000/SECRET"  # a closed local port: posting fails fast with a warning
    run = tmp_path / "run"
    args = ["--config", DEMO, "--out", str(run), "--no-progress"]
    for item in [*tiny_overrides(dataset_root, tmp_path / "cache"), "trainer.epochs=1", "logging.backends=[wandb]",
                 f"logging.notify.webhook={secret}", "logging.notify.events=[end]"]:
        args += ["--set", item]
    assert train.main(args) == 0
    leaked = [p for p in run.rglob("*") if p.is_file() and b"SECRET" in p.read_bytes()]
    assert leaked == []
    assert "<redacted>" in (run / "run_info.json").read_text()
    assert list(run.glob("wandb/offline-run-*/run-*.wandb"))


# ------------------------------------------------------------------------------------------------ metrics.jsonl


@pytest.fixture
def run_dir(tiny_checkpoint, tmp_path):
    return Path(shutil.copytree(tiny_checkpoint.parent, tmp_path / "run",
                                ignore=shutil.ignore_patterns("last.pt", "report")))


def test_hand_edited_metrics_never_reach_the_page_as_markup(run_dir, capsys):
    path = run_dir / "metrics.jsonl"
    record = json.loads(path.read_text().splitlines()[0])
    hostile = dict(record, train_loss="<script>alert(1)</script>", lr=[1, 2], seconds={"x": 1},
                   val_dice_per_class={**record["val_dice_per_class"], "radius": "<img src=x onerror=alert(2)>"})
    path.write_text(json.dumps(hostile) + "\n" + json.dumps({"epoch": "<script>alert(3)</script>"}) + "\n")
    index = analyze_run(str(run_dir), k_worst=1, cleansing=0, progress=False)
    page = index.read_text()
    assert "<script" not in page and "onerror" not in page and "alert" not in page
    err = capsys.readouterr().err
    assert f"warning: {path}:1: 'train_loss' is str '<script>alert(1)</script>', not a number; skipped" in err
    assert f"warning: {path}:1: val_dice_per_class['radius'] is str" in err
    assert f"warning: {path}:2: a record without a positive integer 'epoch', skipped" in err
    assert f"warning: {path}: 5 value(s) of the wrong type skipped" in err
    paths = write_comparison([str(run_dir)], run_dir.parent / "cmp")
    assert "<script" not in paths[2].read_text()


def test_campaign_table_escapes_every_cell():
    page = html_text(["trial", "run_dir"], [{"trial": 0, "run_dir": "<script>x</script>"}], "<b>t</b>", ["a<b.html"])
    assert "<script" not in page and "<b>" not in page and "&lt;script&gt;" in page


# ------------------------------------------------------------------------------------------------ writes


def fail_with(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def test_analyze_report_folder_that_is_a_file(run_dir, capsys):
    (run_dir / "report").write_text("not a folder")
    err = cli_error(analyze.main, ["--run", str(run_dir), "--no-progress"], capsys)
    assert err == f"error: {run_dir / 'report'}: exists and is not a folder"


def test_compare_out_onto_a_file_under_a_file_or_a_full_disk(run_dir, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert cli_error(analyze.main, ["--compare", str(run_dir), "--out", str(a_file)], capsys) == \
        f"error: --out {a_file}: exists and is not a folder"
    assert cli_error(analyze.main, ["--compare", str(run_dir), "--out", str(a_file / "cmp")], capsys) == \
        f"error: --out {a_file / 'cmp'}: {a_file} is a file, not a folder"
    monkeypatch.setattr(files.os, "replace", fail_with(errno.ENOSPC))
    out = tmp_path / "cmp"
    assert cli_error(analyze.main, ["--compare", str(run_dir), "--out", str(out)], capsys) == \
        f"error: {out / 'compare.md'}: cannot write (No space left on device)"
    assert list(out.iterdir()) == []
    monkeypatch.setattr(Path, "mkdir", fail_with(errno.EROFS))
    assert cli_error(analyze.main, ["--compare", str(run_dir), "--out", str(tmp_path / "ro")], capsys) == \
        f"error: {tmp_path / 'ro'}: cannot create the folder (Read-only file system)"


def test_sweep_folder_and_report_write_errors(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {grid: [1.0e-3]}\n")
    err = cli_error(sweep.main, ["--config", DEMO, "--space", str(space), "--out", str(a_file / "c")], capsys)
    assert err == f"error: --out {a_file / 'c'}: {a_file} is a file, not a folder"
    err = cli_error(sweep.main, ["--report", "s", "--out", str(a_file)], capsys)
    assert err == f"error: --out {a_file}: exists and is not a folder"


@pytest.mark.parametrize("flags, message", [
    (["--heartbeat", "-5"], "--heartbeat: must be 0 (off) or a number of seconds, got -5"),
    (["--heartbeat", "60", "--grace", "30"], "--grace: must be longer than --heartbeat (60 s), got 30"),
    (["--heartbeat", "0", "--grace", "30"], "--grace: has no effect with --heartbeat 0"),
])
def test_sweep_heartbeat_flags_are_named(tmp_path, capsys, flags, message):
    space = tmp_path / "space.yaml"
    space.write_text("optimizer.lr: {grid: [1.0e-3]}\n")
    err = cli_error(sweep.main, ["--config", DEMO, "--space", str(space), "--out", str(tmp_path / "c"), *flags],
                    capsys)
    assert err.startswith(f"error: {message}")
    assert not (tmp_path / "c").exists()


def test_visualize_out_errors(dataset_root, tmp_path, capsys, monkeypatch):
    csv_path = tmp_path / "s.csv"
    csv_path.write_text("image_name,class,rle\n")
    base = ["submission", "--csv", str(csv_path), "--data", str(dataset_root)]
    assert cli_error(visualize.main, [*base, "--out", str(tmp_path)], capsys) == \
        f"error: --out {tmp_path}: is a folder, expected a file name"
    assert cli_error(visualize.main, [*base, "--out", str(tmp_path / "no" / "x.png")], capsys).startswith(
        f"error: --out {tmp_path / 'no' / 'x.png'}: the folder {tmp_path / 'no'} does not exist")
    import analysis.visualize as module

    monkeypatch.setattr(module, "submission_tiles", lambda *a: ([np.zeros((8, 8, 3), np.uint8)], ["x"]))
    monkeypatch.setattr(files.os, "replace", fail_with(errno.ENOSPC))
    out = tmp_path / "grid.png"
    assert cli_error(visualize.main, [*base, "--out", str(out)], capsys) == \
        f"error: {out}: cannot write (No space left on device)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv"]


def test_killed_atomic_folder_writers_leave_nothing_after_a_rerun(tmp_path):
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    out = tmp_path / "pseudo"
    dead = tmp_path / f"pseudo.tmp-{pid_max + 1}-0badc0de"
    old = tmp_path / "pseudo.tmp-deadbeef"  # the name of versions without a process id
    live = tmp_path / f"pseudo.tmp-{os.getppid()}-12345678"  # a running writer's: kept
    other = tmp_path / "pseudo2.tmp-deadbeef"  # another output's
    for folder in (dead, old, live, other):
        folder.mkdir()
        (folder / "half.json").write_text("{")
    with atomic_folder(out) as tmp:
        assert tmp.name.startswith(f"pseudo.tmp-{os.getpid()}-")
        (tmp / "done.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["pseudo", live.name, other.name])


def test_pseudo_label_rerun_after_a_kill_leaves_no_temporary_folder(tmp_path):
    """A real kill -9 of a writer inside atomic_folder, then a successful rerun."""
    out = tmp_path / "pseudo"
    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path\n"
            "from utils.files import atomic_folder\n"
            f"with atomic_folder(Path({str(out)!r})) as tmp:\n"
            "    (tmp / 'a').write_text('x'); print('ready', flush=True); time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
    finally:
        writer.kill()
        writer.wait()
    assert len(list(tmp_path.glob("pseudo.tmp-*"))) == 1
    with atomic_folder(out) as tmp:
        (tmp / "b").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pseudo"]


# ------------------------------------------------------------------------------------------------ plug-in loss


@pytest.mark.parametrize("returned, shown", [("[logits.mean()]", "a list"), ("logits.mean(1)", "a tensor of shape")])
def test_a_plugin_loss_that_returns_no_scalar_is_named(tmp_path, returned, shown):
    plugin = tmp_path / "my_loss.py"
    plugin.write_text(f"def Bad():\n    return lambda logits, target: {returned}\n")
    loss = build_loss(LossConfig(terms=[LossTerm("bce"), LossTerm(f"{plugin}:Bad")]), "multilabel")
    with pytest.raises(ConfigError, match=rf"^loss.terms\[1\].name: the loss of {plugin}:Bad returned {shown}"):
        loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))

