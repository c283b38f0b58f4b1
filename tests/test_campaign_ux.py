"""What a team meets in a long campaign: one MLflow store for single and k-fold runs, checkpoints that do not fill
the disk, `amp: off` from the command line, --check that reads the submission's header, resume and Ctrl-C
messages, argument errors before the libraries load, legends and named errors in pictures, and the import floors
that keep tracking and campaigns above the trainer."""
from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from tests.conftest import ROOT, tiny_overrides
from trainer.callbacks import Callback, StopTraining
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import load_config
from utils.errors import ConfigError

DEMO = str(ROOT / "configs" / "demo.yaml")


def sets(*items: str) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


# ------------------------------------------------------------------------------------------- one MLflow store


def test_kfold_and_single_runs_land_in_one_mlflow_store(dataset_root, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    common = sets(*tiny_overrides(dataset_root, tmp_path / "cache"), "trainer.epochs=1", "logging.backends=[mlflow]",
                  "logging.image_every=0")
    assert train.main(["--config", DEMO, "--out", str(runs / "kf"), "--folds", "0,1", "--no-progress", *common]) == 0
    assert train.main(["--config", DEMO, "--out", str(runs / "single"), "--no-progress", *common,
                       "--set", "trainer.keep_last=false"]) == 0

    assert not (runs / "kf" / "mlflow.db").exists()  # the folds are not in a store of their own
    client = MlflowClient(f"sqlite:///{runs / 'mlflow.db'}")  # the store `mlflow ui` opens for runs/
    experiment = client.get_experiment_by_name(load_config(DEMO).logging.wandb_project)
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(found) == {"kf/fold0", "kf/fold1", "single"}
    assert all(r.info.status == "FINISHED" and r.data.tags["config"] == "demo" for r in found.values())
    assert found["kf/fold0"].data.tags["group"] == "kf" and "group" not in found["single"].data.tags
    assert found["kf/fold1"].data.params["data.fold"] == "1"

    # keep_last: false leaves best.pt only; MLflow records its path instead of a second copy
    assert (runs / "single" / "best.pt").is_file() and not (runs / "single" / "last.pt").exists()
    assert (runs / "kf" / "fold0" / "last.pt").is_file()  # the default keeps it
    single = found["single"]
    assert single.data.tags["best_checkpoint"] == str((runs / "single" / "best.pt").resolve())
    assert {a.path for a in client.list_artifacts(single.info.run_id)} == {"config.yaml"}


# ------------------------------------------------------------------------------------------- amp: off


def test_amp_off_from_the_command_line_and_yaml(tmp_path):
    assert load_config(DEMO, ["trainer.amp=off"]).trainer.amp == "off"  # YAML 1.1 reads off as false
    config = tmp_path / "c.yaml"
    config.write_text(f"_base_: [{DEMO}]\ntrainer: {{amp: off}}\naveraging: {{mode: off}}\n")
    cfg = load_config(config)
    assert cfg.trainer.amp == "off" and cfg.averaging.mode == "off"
    assert load_config(DEMO, ["trainer.amp=bf16"]).trainer.amp == "bf16"
    with pytest.raises(ConfigError, match=r"trainer\.amp: true \(YAML reads on/yes/true as true\) is not one of "
                                          r"'off', 'bf16', 'fp16'"):
        load_config(DEMO, ["trainer.amp=on"])
    with pytest.raises(ConfigError, match=r"predict\.tta: false .* is not one of 'none', 'hflip'"):
        load_config(DEMO, ["predict.tta=off"])  # no choice written off: still an error naming the choices


# ------------------------------------------------------------------------------------------- reproducible runs


def test_cpu_augmentations_follow_the_torch_seed():
    """albumentations 2 seeds its own generator from the OS unless told: the draws must follow torch's seed, which
    seed_everything and the DataLoader workers set per epoch and worker."""
    from transforms.cpu import apply_cpu_transforms, build_cpu_transforms

    compose = build_cpu_transforms([{"name": "Rotate", "limit": 40, "p": 1.0},
                                    {"name": "RandomBrightnessContrast", "p": 1.0}], "transforms.train")
    image = (np.arange(64 * 64) % 251).astype(np.uint8).reshape(64, 64)

    def draws(seed: int) -> list[np.ndarray]:
        torch.manual_seed(seed)
        return [apply_cpu_transforms(compose, image, None)[0] for _ in range(3)]

    first, again, other = draws(1), draws(1), draws(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[0], other[0])


# ------------------------------------------------------------------------------------------- --check by header


@pytest.fixture(scope="module")
def trash_root(tmp_path_factory):
    from tasks.coco.synthetic import generate

    return generate(tmp_path_factory.mktemp("trash") / "ds", train=8, test=3, size=64, seed=2, progress=False)


def run(script: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_check_tells_the_submission_by_its_header(trash_root, tmp_path):
    names = [image["file_name"] for image in json.loads((trash_root / "test.json").read_text())["images"]]
    background = " ".join(["0"] * 256 * 256)
    csv = tmp_path / "trash.csv"
    csv.write_text("image_id,PredictionString\n" + "".join(f"{name},{background}\n" for name in names))
    check = run("inference.py", "--check", csv, "--data", trash_root)  # no --config: the header says trash
    assert check.returncode == 0 and f"OK: {csv} matches the test images" in check.stdout, check.stdout + check.stderr
    csv.write_text("image_id,PredictionString\n" + "".join(f"{name},{background}\n" for name in names[:-1]))
    check = run("inference.py", "--check", csv, "--data", trash_root)
    assert check.returncode == 1 and "have no row" in check.stdout

    other = tmp_path / "other.csv"
    other.write_text("id,mask\na,1\n")
    check = run("inference.py", "--check", other, "--data", trash_root)
    assert check.returncode == 2 and check.stderr.strip() == (
        f"error: {other}: header 'id,mask' is not a known submission (image_name,class,rle or "
        f"image_id,PredictionString); give --config <the task's config>")


# ------------------------------------------------------------------------------------------- resume messages


class StopAfterFirst(Callback):
    def on_epoch_end(self, trainer, record):
        raise StopTraining("stopped by the test")


def test_resume_messages(tiny_config, tmp_path, capsys):
    cfg = tiny_config("trainer.epochs=1")
    Trainer(cfg, tmp_path / "done", setup_runtime(cfg.trainer), progress=False).fit()
    last = tmp_path / "done" / "last.pt"
    before = last.stat().st_mtime_ns
    capsys.readouterr()
    assert train.main(["--resume", str(last), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"{last}: the run already finished its 1 epoch; nothing to do"
    assert last.stat().st_mtime_ns == before
    # a Trainer asked to go on from it runs nothing and says so in its result: 1 epoch, not 2
    assert Trainer(cfg, tmp_path / "done", setup_runtime(cfg.trainer), resume=str(last),
                   progress=False).fit()["epochs"] == 1

    # stopped before its first validation: no "-1.0000" score
    cfg = tiny_config("trainer.epochs=2", "trainer.val_every=2")
    Trainer(cfg, tmp_path / "part", setup_runtime(cfg.trainer), progress=False, callbacks=[StopAfterFirst()]).fit()
    capsys.readouterr()
    Trainer(cfg, tmp_path / "part", setup_runtime(cfg.trainer), resume=str(tmp_path / "part" / "last.pt"),
            progress=False)
    out = capsys.readouterr().out
    assert f"resumed from {tmp_path / 'part' / 'last.pt'} after epoch 1 of 2 (not validated yet)" in out, out


def tiny_trash(root, cache, *extra: str):
    return load_config(ROOT / "configs" / "trash_demo.yaml", [
        f"data.root={root}", f"data.cache_dir={cache}", "data.synthetic=null", "data.image_size=32",
        "data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", "data.cache_workers=1",
        "data.oversample=null", "transforms.copy_paste=null", "trainer.val_every=1",
        "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}", *extra])


def test_resume_of_a_trash_run_prints_its_miou(trash_root, tmp_path, capsys):
    cfg = tiny_trash(trash_root, tmp_path / "cache", "trainer.epochs=1")
    best = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False).fit()["best_score"]
    capsys.readouterr()
    longer = tiny_trash(trash_root, tmp_path / "cache", "trainer.epochs=2")
    Trainer(longer, tmp_path / "run", setup_runtime(longer.trainer), resume=str(tmp_path / "run" / "last.pt"),
            progress=False)
    assert best >= 0 and f"after epoch 1 of 2 (best mIoU so far {best:.4f})" in capsys.readouterr().out


def test_a_trash_run_is_reproduced_exactly(trash_root, tmp_path):
    """The trash demo's randomness (oversampling, copy-paste, GPU flips, a loader worker) follows trainer.seed: the
    same config gives the same losses and scores, which is what makes the README's figure reproducible."""
    def metrics(name: str) -> list[dict]:
        cfg = tiny_trash(trash_root, tmp_path / "cache", "trainer.epochs=1", "data.num_workers=1",
                         "data.oversample={inverse_frequency: true, max_factor: 2}",
                         "transforms.copy_paste={classes: [Battery, Clothing], p: 1.0, max_objects: 2}")
        Trainer(cfg, tmp_path / name, setup_runtime(cfg.trainer), progress=False).fit()
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in lines]

    first = metrics("a")
    assert first == metrics("b") and first[-1]["val_miou"] is not None


# ------------------------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_says_what_was_kept_and_how_to_go_on(dataset_root, tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "train.py", "--config", DEMO, "--out", str(run_dir), "--no-progress",
            *sets(*tiny_overrides(dataset_root, tmp_path / "cache"), "trainer.epochs=200", "trainer.val_every=200")]
    child = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal
    try:
        deadline = time.time() + 300
        while not (run_dir / "last.pt").is_file():
            assert child.poll() is None and time.time() < deadline, child.stderr.read() if child.poll() else "slow"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=300)
    assert child.returncode == 130, err
    last = run_dir / "last.pt"
    match = re.fullmatch(rf"interrupted: {re.escape(str(last))} kept \(epoch (\d+)\); continue with: "
                         rf"python train\.py --resume {re.escape(str(last))}", err.strip().splitlines()[-1])
    assert match, err
    assert int(match.group(1)) == torch.load(last, weights_only=True)["epoch"] + 1


# ------------------------------------------------------------------------------------------- argument errors


HARNESS = """
import resource, runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_path({script!r}, run_name="__main__")
except SystemExit as e:
    code = e.code
usage = resource.getrusage(resource.RUSAGE_SELF)
print(code, "torch" in sys.modules, round(usage.ru_utime + usage.ru_stime, 2))
"""


@pytest.mark.parametrize("argv, message", [
    (["train.py", "--resume", "missing/last.pt"], "missing/last.pt: checkpoint not found"),
    (["train.py", "--config", "configs/missing.yaml"], "configs/missing.yaml: config file not found"),
    (["train.py", "--config", DEMO, "--resume", "x.pt", "--overwrite"], "--resume and --overwrite do not go"),
    (["inference.py", "--checkpoint", "missing.pt"], "missing.pt: checkpoint not found"),
    (["inference.py", "--checkpoint", DEMO, "--data", "no/root"], "no/root: data root not found"),
    (["inference.py", "--check", "missing.csv", "--data", "."], "missing.csv: submission file not found"),
    (["ensemble.py", "--checkpoints", "missing.pt"], "missing.pt: checkpoint not found"),
    (["ensemble.py", "--csvs", "a.csv", "b.csv", "--out", "v.csv"], "a.csv: submission file not found"),
    (["pseudo_label.py", "--checkpoints", "missing.pt", "--out", "p"], "missing.pt: checkpoint not found"),
    (["analyze.py", "--run", "no/run"], "no/run: run directory not found"),
    (["visualize.py", "augment", "--config", "configs/missing.yaml"], "configs/missing.yaml: config file not found"),
    (["visualize.py", "submission", "--csv", "missing.csv", "--data", "."], "missing.csv: submission file not found"),
    (["sweep.py", "--config", DEMO, "--space", "missing.yaml"], "missing.yaml: space file not found"),
])
def test_argument_errors_come_before_the_libraries_load(argv, message):
    """Measured here (2 shared cores): these took 2.5-12 CPU-seconds before, about 0.05 now."""
    done = subprocess.run([sys.executable, "-c", HARNESS.format(argv=argv, script=argv[0])], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    code, torch_loaded, _cpu_seconds = done.stdout.split()
    assert code == "2" and torch_loaded == "False", done.stdout + done.stderr
    assert done.stderr.strip() == f"error: {message}" or done.stderr.startswith(f"error: {message}"), done.stderr
    assert done.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------- pictures


def test_error_panel_names_the_bones_with_most_wrong_pixels(classes):
    from analysis.overlay import overlay_row, worst_errors

    truth = np.zeros((len(classes), 64, 64), dtype=bool)
    truth[3, 10:30, 10:30] = True  # 400 pixels, all missed
    truth[7, 40:50, 40:50] = True  # 100 pixels, 20 of them missed
    pred = truth.copy()
    pred[3] = False
    pred[7, 40:42, 40:50] = False
    pred[9, 0:2, 0:2] = True  # 4 false positives
    assert [c for c, _, _ in worst_errors(truth, pred)] == [3, 7, 9]
    _, row, col = worst_errors(truth, pred)[0]
    assert truth[3, row, col] != pred[3, row, col]  # the label's spot is on the class's errors
    image = np.full((64, 64), 90, dtype=np.uint8)
    plain, named = overlay_row(image, truth, pred), overlay_row(image, truth, pred, classes=classes)
    width = image.shape[1]
    assert np.array_equal(plain[:, :3 * width + 12], named[:, :3 * width + 12])  # only the errors panel changes
    assert not np.array_equal(plain[:, 3 * width + 12:], named[:, 3 * width + 12:])


def test_visualize_grids_have_a_class_legend(tiny_config, tmp_path, monkeypatch, classes):
    import analysis.visualize as visualize

    drawn = []
    monkeypatch.setattr(visualize, "save_png", lambda fig, path: drawn.append(fig) or path)
    cfg = tiny_config()
    visualize.augment_grid(cfg, setup_runtime(cfg.trainer), 1, 1, tmp_path / "a.png", progress=False)
    [legend] = drawn[0].legends
    assert [t.get_text() for t in legend.get_texts()] == classes
    colors = [h.get_facecolor()[:3] for h in legend.legend_handles]
    assert np.allclose(colors[3], visualize.class_colors(len(classes))[3] / 255)  # the colour the masks get
    assert [name for name, _ in visualize.class_legend(["Background", "a", "b"], label_maps=True)] == ["a", "b"]


# ------------------------------------------------------------------------------------------- import floors


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_trainer_never_imports_the_tools_and_campaign_modules_have_no_cycle():
    for path in sorted((ROOT / "trainer").glob("*.py")):
        above = {m for m in imported_modules(path) if m.split(".")[0] in ("tracking", "analysis", "campaign")}
        assert not above, f"{path.name} imports {sorted(above)}"
    campaign = {p.stem: {m.split(".")[1] for m in imported_modules(p) if m.startswith("campaign.")}
                for p in (ROOT / "campaign").glob("*.py") if p.stem != "__init__"}
    for name, deps in campaign.items():
        for dep in deps & set(campaign):
            assert name not in campaign[dep], f"campaign/{name}.py and campaign/{dep}.py import each other"
