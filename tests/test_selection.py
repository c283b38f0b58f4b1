"""ensemble.py --select / --plan: out-of-fold predictions (cached), Caruana selection, thresholds, post-processing
(modes/postprocess.py, also predict.postprocess on its own), the plan and its tables, for both tasks."""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

import ensemble
import export
import inference
import selection.oof
from modes.crf import dense_crf
from modes.dice import DICE_EPS
from modes.postprocess import Postprocess, clean_mask
from selection.plan import apply_plan, make_plan, read_plan
from selection.search import DiceSearch, Selection, greedy
from selection.table import html_page, markdown
from tasks.coco.submission import validate_trash_submission
from tasks.coco.synthetic import generate as generate_trash
from tasks.handbone.submission import read_submission, validate_submission
from tasks.registry import build_task
from tests.conftest import ROOT, tiny_overrides
from tests.test_onnx import MAX_DIFFERING_PIXELS, differing_fraction, positive_pixels
from trainer.inference import expand_checkpoints, load_members, write_submission
from trainer.kfold import train_folds
from trainer.runtime import setup_runtime
from utils.cli import run_main
from utils.config import PostprocessOps, load_config
from utils.errors import ConfigError, UserError
from utils.rle import decode_rle

# ----------------------------------------------------------------------------------------------- post-processing


def _blobs() -> np.ndarray:
    """A 40x50 mask: a ring with a hole, a ring whose hole is open to the left edge, a 3-pixel speck."""
    m = np.zeros((40, 50), bool)
    m[5:20, 5:20] = True
    m[9:15, 9:15] = False  # a hole
    m[25:38, 0:12] = True
    m[28:34, 0:6] = False  # open to the left border: not a hole
    m[2, 40:43] = True
    return m


def test_clean_mask_operations():
    m = _blobs()
    assert clean_mask(m, PostprocessOps()).sum() == m.sum()
    largest = clean_mask(m, PostprocessOps(largest_component=True))
    assert largest.sum() == m[0:22].sum() - 3 and not largest[2, 40:43].any()
    assert not clean_mask(m, PostprocessOps(min_size=4))[2, 40:43].any()
    assert clean_mask(m, PostprocessOps(min_size=3))[2, 40:43].all()
    filled = clean_mask(m, PostprocessOps(fill_holes=True))
    assert filled[9:15, 9:15].all() and not filled[28:34, 0:6].any()
    assert not clean_mask(np.zeros((4, 4), bool), PostprocessOps(largest_component=True, fill_holes=True)).any()


@pytest.mark.parametrize("ops", [PostprocessOps(largest_component=True), PostprocessOps(min_size=20),
                                 PostprocessOps(fill_holes=True),
                                 PostprocessOps(largest_component=True, min_size=5, fill_holes=True)])
def test_a_box_crop_gives_the_full_image_result(ops):
    """The writer post-processes the box crops of modes.fullsize: everything outside is background, so the crop's
    components and holes (also those touching the crop's border) are the full image's."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        full = np.zeros((60, 70), bool)
        r0, c0 = rng.integers(0, 20, 2)
        r1, c1 = r0 + rng.integers(5, 40), c0 + rng.integers(5, 50)
        full[r0:r1, c0:c1] = rng.random((r1 - r0, c1 - c0)) < 0.6
        crop = full[r0:r1, c0:c1]
        expected = clean_mask(full, ops)
        assert not expected[:r0].any() and not expected[:, :c0].any()
        pp = Postprocess([ops])
        assert np.array_equal(pp.mask(0, crop), expected[r0:r1, c0:c1])
        assert expected.sum() == pp.mask(0, crop).sum()


def test_label_map_rules():
    """Removed pixels become background; holes are filled only over background; the background is never
    processed."""
    labels = np.zeros((30, 30), np.uint8)
    labels[2:20, 2:20] = 1
    labels[8:12, 8:12] = 0  # a hole of background
    labels[14:17, 14:17] = 2  # another object inside class 1
    labels[25, 25] = 1  # a speck of class 1
    labels[27:29, 0:3] = 2
    spec = {"all": PostprocessOps(largest_component=True, fill_holes=True)}
    pp = Postprocess.build(spec, ["Background", "a", "b"], multiclass=True)
    assert pp.per_class[0] is None
    out = pp.labels(labels)
    assert (out[8:12, 8:12] == 1).all() and (out[14:17, 14:17] == 2).all() and out[25, 25] == 0
    assert (out[27:29, 0:3] == 0).all()  # class b: its largest component is the one inside class a
    assert Postprocess.build({"b": PostprocessOps()}, ["Background", "a", "b"], True) is None


def test_postprocess_config_is_checked():
    demo = ROOT / "configs" / "demo.yaml"
    cfg = load_config(demo, ["predict.postprocess={all: {min_size: 10}, Radius: {largest_component: true}}"])
    assert cfg.predict.postprocess["Radius"] == PostprocessOps(largest_component=True)
    pp = Postprocess.build(cfg.predict.postprocess, cfg.task.classes)
    assert pp.per_class[0].min_size == 10 and pp.per_class[cfg.task.classes.index("Radius")].min_size == 0
    with pytest.raises(ConfigError, match=r"predict\.postprocess: unknown class 'Radiu' \(did you mean 'Radius'"):
        load_config(demo, ["predict.postprocess={Radiu: {min_size: 3}}"])
    with pytest.raises(ConfigError, match=r"unknown key 'predict\.postprocess\.Radius\.larges'"):
        load_config(demo, ["predict.postprocess={Radius: {larges: true}}"])
    with pytest.raises(ConfigError, match=r"predict\.postprocess\.all\.min_size: must be >= 0"):
        load_config(demo, ["predict.postprocess={all: {min_size: -1}}"])
    with pytest.raises(ConfigError, match=r"predict\.postprocess\.Background: the background"):
        load_config(ROOT / "configs" / "trash_demo.yaml", ["predict.postprocess={Background: {min_size: 3}}"])


# ----------------------------------------------------------------------------------------------- the search


class _Quadratic:
    """A stand-in scorer: 1 - squared distance of the normalized weights to a target mix."""

    def __init__(self, target):
        self.target = np.asarray(target, float)
        self.passes = 0

    def ensembles(self, weight_vectors, desc=""):
        self.passes += 1
        out = []
        for w in weight_vectors:
            mix = np.asarray(w, float) / np.sum(w)
            out.append((1 - float(((mix - self.target) ** 2).sum()), [0.0]))
        return out


def test_greedy_selection_with_replacement_and_stop():
    weights, rows, alone, _ = greedy(_Quadratic([2 / 3, 1 / 3, 0]), ["a", "b", "c"], 10)
    assert weights == [2, 1, 0]  # a, then b, then a again; adding anything more lowers the score
    assert alone == pytest.approx([1 - 2 / 9, 1 - 8 / 9, 1 - 14 / 9])
    steps = [r for r in rows if r["step"].startswith("ensemble")]
    assert [r["score"] for r in steps] == sorted(r["score"] for r in steps) and steps[-1]["score"] == 1.0
    assert all(r["gain"] > 0 for r in steps[1:])
    weights, _, _, _ = greedy(_Quadratic([2 / 3, 1 / 3, 0]), ["a", "b", "c"], 2)
    assert weights == [1, 1, 0]  # --steps bounds the additions
    weights, _, _, _ = greedy(_Quadratic([0.5, 0.5]), ["a", "b"], 10)
    assert weights == [1, 1]  # a tie goes to the run given first: a, then b
    scorer = _Quadratic([1.0])
    assert greedy(scorer, ["a"], 10)[0] == [1] and scorer.passes == 1  # adding a to itself needs no pass


class _MadeUpOof:
    """Out-of-fold images made by hand: one class, a 8x8 square of truth. Run a: the square with a 2x2 hole and a
    false top strip (an island); run b: the square and a false bottom strip; run c: lukewarm everywhere; run d:
    exactly the truth. a and b in equal parts cancel both strips (0.95 / 2 < 0.5) but keep a hole (0.9 / 2)."""

    def __init__(self):
        self.classes = ["bone"]
        truth = np.zeros((1, 16, 16), bool)
        truth[0, 4:12, 4:12] = True
        self.bits = np.packbits(truth, axis=2)
        a, b, d = (np.where(truth, 0.9, 0.0) for _ in range(3))
        a[0, 7:9, 7:9] = 0.0
        a[0, 0:2], b[0, 14:16] = 0.95, 0.95
        self.runs = [torch.tensor(m, dtype=torch.float32) for m in (a, b, np.full((1, 16, 16), 0.3), d)]

    def __len__(self):
        return 3

    def size(self, n):
        return (16, 16)

    def truth_bits(self, n):
        return self.bits

    def maps(self, n, runs, device):
        return {r: self.runs[r] for r in runs}


def test_selection_on_made_up_members_picks_the_known_best():
    weights, rows, alone, per_class = greedy(DiceSearch(_MadeUpOof(), "cpu", 0.5, progress=False),
                                             ["a", "b", "c"], 10)
    hole = 2 * 60 / (60 + 64)  # a and b: the square less its hole
    assert weights == [1, 1, 0] and per_class == [pytest.approx(hole)]
    assert alone == pytest.approx([2 * 60 / (92 + 64), 2 * 64 / (96 + 64), 0.0], abs=1e-5)  # DICE_EPS
    assert [r["score"] for r in rows if r["step"].startswith("ensemble")] == pytest.approx([alone[1], hole])


def _refined(weights) -> Selection:
    selection = Selection("dice", weights)
    DiceSearch(_MadeUpOof(), "cpu", 0.5, progress=False).refine(selection, [4, 40], None)
    return selection


def test_post_processing_on_made_up_members_only_where_it_raises_the_score():
    island = _refined([0, 1, 0, 0])  # b: the bottom strip is a component of its own
    assert island.postprocess == {"bone": PostprocessOps(largest_component=True)} and island.score == 1.0
    assert island.thresholds == [0.5]  # the strip is hotter than the square: no threshold removes it
    hole = _refined([1, 1, 0, 0])  # a and b: a hole in the square
    assert hole.postprocess == {"bone": PostprocessOps(fill_holes=True)} and hole.score == 1.0
    gains = {r["step"]: r["gain"] for r in hole.rows}
    assert gains["post-process bone"] == pytest.approx(1 - 2 * 60 / 124) and gains["thresholds"] == 0
    perfect = _refined([0, 0, 0, 1])  # nothing to improve: nothing kept
    assert perfect.postprocess == {} and perfect.thresholds == [0.5] and perfect.score == 1.0
    assert not any(r["step"].startswith(("post-process ", "threshold ")) for r in perfect.rows)


def test_tables_escape_every_value():
    plan = {"members": [{"run": "<run>", "weight": 2, "checkpoints": [{"fold": 0, "tta": "none"}]}],
            "out_of_fold": {"metric": "dice", "images": 3, "folds": [0], "score": 0.5,
                            "table": [{"step": "run", "what": "<b>x</b> | y", "score": 0.5, "gain": None}]}}
    page = html_page(plan)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "&lt;run&gt;" in page
    assert "\\| y" in markdown(plan)


# ----------------------------------------------------------------------------------------------- hand bones


def _train(cfg, folder):
    train_folds(cfg, folder, list(range(cfg.data.n_splits)), setup_runtime(cfg.trainer), progress=False)
    return folder


@pytest.fixture(scope="module")
def hand_runs(dataset_root, tmp_path_factory):
    """Two 2-fold runs of different recipes (loss, learning rate, TTA), one epoch each."""
    tmp = tmp_path_factory.mktemp("select")
    base = tiny_overrides(dataset_root, tmp / "cache") + ["data.n_splits=2", "trainer.epochs=1",
                                                          "model.head_prior=0.3"]
    demo = ROOT / "configs" / "demo.yaml"
    a = _train(load_config(demo, base), tmp / "a")
    b = _train(load_config(demo, base + ["loss.terms=[{name: bce}]", "optimizer.lr=3e-3", "predict.tta=hflip"]),
               tmp / "b")
    return tmp, a, b


def _recompute_dice(plan: dict, layout, root, data_root) -> float:
    """The plan's out-of-fold Dice, independently: each member's saved maps upsampled whole by F.interpolate,
    weighted, thresholded, post-processed on the whole image, against masks rasterized from the JSON."""
    classes = plan["task"]["classes"]
    thresholds = torch.tensor([plan["thresholds"][c] for c in classes])[:, None, None]
    pp = Postprocess.build({c: PostprocessOps(**ops) for c, ops in plan["postprocess"].items()}, classes)
    index = json.loads((root / plan["members"][0]["run"] / "oof" / "index.json").read_text())["folds"]
    samples = {s.key: s for s in layout.fold(load_config(ROOT / "configs" / "demo.yaml",
                                                         [f"data.root={data_root}"]).data, 0)[0]}
    sums, count = np.zeros(len(classes)), 0
    for entry in index.values():
        for key in entry["keys"]:
            _, bits, size, _ = layout.process(samples[key], None)
            truth = np.unpackbits(bits, axis=2, count=size[1]).astype(bool)
            mean, total = None, 0.0
            for m in plan["members"]:
                path = root / m["run"] / "oof" / f"fold{entry['fold']}" / key.replace(".png", ".npz")
                p = torch.from_numpy(np.load(path)["probs"]).float().div_(255)
                up = F.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0] * float(m["weight"])
                mean, total = (up if mean is None else mean + up), total + m["weight"]
            masks = (mean / total > thresholds).numpy()
            for c in range(len(classes)):
                mask = masks[c] if pp is None else pp.mask(c, masks[c])
                inter, area = np.count_nonzero(mask & truth[c]), np.count_nonzero(mask)
                sums[c] += (2 * inter + DICE_EPS) / (area + truth[c].sum() + DICE_EPS)
            count += 1
    return float((sums / count).mean())


def test_select_then_plan_hand_bones(hand_runs, dataset_root, monkeypatch, capsys):
    tmp, _, _ = hand_runs
    monkeypatch.chdir(tmp)  # run folders as relative paths, as a user gives them
    plan = make_plan(["a", "b"], "plan.yaml", steps=4, num_workers=0, progress=False)
    assert "24 images predicted, 0 read from the cache" in capsys.readouterr().out  # 12 images x 2 runs

    # the plan and its tables
    saved = yaml.safe_load((tmp / "plan.yaml").read_text())
    assert saved["out_of_fold"]["score"] == plan["out_of_fold"]["score"]
    assert (tmp / "plan.md").read_text().startswith("# Selection plan") and (tmp / "plan.html").is_file()
    assert {m["run"] for m in plan["members"]} <= {"a", "b"} and all(m["weight"] >= 1 for m in plan["members"])
    for m in plan["members"]:
        assert [c["fold"] for c in m["checkpoints"]] == [0, 1]
        assert {c["tta"] for c in m["checkpoints"]} == {"hflip" if m["run"] == "b" else "none"}
    oof = plan["out_of_fold"]
    assert oof["images"] == 12 and oof["folds"] == [0, 1] and set(oof["runs"]) == {"a", "b"}
    steps = {r["step"]: r for r in oof["table"]}
    ensemble = [r for r in oof["table"] if r["step"].startswith("ensemble")]
    assert ensemble[0]["score"] == max(oof["runs"].values())  # never worse than the best run alone
    assert all(r["gain"] > 0 for r in ensemble[1:]) and oof["score"] >= ensemble[-1]["score"]
    assert steps["final"]["score"] == oof["score"] >= max(oof["runs"].values())

    # thresholds and post-processing are kept only where they raise the score
    for r in oof["table"]:
        if r["step"].startswith(("threshold ", "post-process ")):
            assert r["gain"] > 0, r
    changed = {r["step"].split(" ", 1)[1] for r in oof["table"] if r["step"].startswith("threshold ")}
    assert changed == {c for c, t in plan["thresholds"].items() if t != 0.5}
    assert {r["step"].split(" ", 1)[1] for r in oof["table"] if r["step"].startswith("post-process ")} \
        == set(plan["postprocess"])
    assert steps["thresholds"]["score"] == pytest.approx(ensemble[-1]["score"] + steps["thresholds"]["gain"])

    # the scores are those of an independent recomputation (whole-image upsampling and post-processing)
    layout = build_task(load_config(ROOT / "configs" / "demo.yaml")).layout
    assert _recompute_dice(plan, layout, tmp, dataset_root) == pytest.approx(oof["score"], abs=1e-9)
    no_pp = dict(plan, postprocess={})
    assert _recompute_dice(no_pp, layout, tmp, dataset_root) == pytest.approx(steps["thresholds"]["score"], abs=1e-9)
    if plan["postprocess"]:
        assert _recompute_dice(no_pp, layout, tmp, dataset_root) < oof["score"]

    # a second selection reads the cache: no model is loaded, no file rewritten
    stamps = {p: p.stat().st_mtime_ns for p in tmp.glob("*/oof/fold*/**/*.npz")}
    assert len(stamps) == 24
    monkeypatch.setattr(selection.oof, "load_members", lambda *a, **k: pytest.fail("predicted again"))
    again = make_plan(["a", "b"], "plan2.yaml", steps=4, num_workers=0, progress=False)
    assert again["out_of_fold"] == plan["out_of_fold"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # the plan's submission: valid, and its members' fold models as `ensemble.py --checkpoints` soft-votes them
    apply_plan("plan.yaml", "sub.csv", num_workers=0, progress=False)
    classes = plan["task"]["classes"]
    assert validate_submission(tmp / "sub.csv", dataset_root, classes) == []
    one = dict(saved, members=[dict(saved["members"][0], weight=1)], thresholds={c: 0.5 for c in classes}, postprocess={})
    (tmp / "one.yaml").write_text(yaml.safe_dump(one))
    apply_plan("one.yaml", "one.csv", num_workers=0, progress=False)
    members, runtime = load_members(expand_checkpoints([one["members"][0]["run"]]), [1.0, 1.0])
    write_submission(members, members[0].task, dataset_root, tmp / "ref.csv", runtime,
                     thresholds=torch.full((len(classes),), 0.5), num_workers=0, progress=False)
    assert (tmp / "one.csv").read_text() == (tmp / "ref.csv").read_text()
    if plan["postprocess"]:  # the plan's post-processing reaches the CSV: each chosen class as the ops say
        rows = read_submission(tmp / "sub.csv", classes)
        for name, ops in plan["postprocess"].items():
            if ops.get("largest_component"):
                for rles in rows.values():
                    mask = decode_rle(rles[classes.index(name)], 128, 128).astype(np.uint8)
                    assert cv2.connectedComponents(mask, connectivity=8)[0] <= 2

    # a changed checkpoint: the old plan is refused, the next selection predicts that fold again, and only it
    monkeypatch.undo()
    monkeypatch.chdir(tmp)
    member = plan["members"][0]["run"]  # a run the plan uses
    touched = tmp / member / "fold1" / "best.pt"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    with pytest.raises(UserError, match=rf"plan\.yaml: {member}/fold1/best\.pt changed since the selection"):
        apply_plan("plan.yaml", "sub2.csv", num_workers=0, progress=False)
    calls = []
    real = selection.oof.load_members
    monkeypatch.setattr(selection.oof, "load_members", lambda paths, *x, **k: calls.append(paths) or real(paths, *x, **k))
    make_plan(["a", "b"], "plan.yaml", steps=4, num_workers=0, progress=False)
    assert [[str(p) for p in paths] for paths in calls] == [[f"{member}/fold1/best.pt"]]
    fresh = {p: p.stat().st_mtime_ns for p in stamps}
    assert {p for p in stamps if fresh[p] != stamps[p]} == set((tmp / member / "oof" / "fold1").rglob("*.npz"))
    apply_plan("plan.yaml", "sub2.csv", num_workers=0, progress=False)

    # runs of another split: one line naming both
    c = tmp / "c"
    for k in (0, 1):
        state = torch.load(tmp / "a" / f"fold{k}" / "best.pt", weights_only=True)
        state["config"]["data"]["n_splits"] = 3
        (c / f"fold{k}").mkdir(parents=True)
        torch.save(state, c / f"fold{k}" / "best.pt")
    with pytest.raises(UserError, match=r"^a and c: not the same cross-validation split \(fold 0: \d+ images differ"):
        make_plan(["a", "c"], "bad.yaml", num_workers=0, progress=False)


def test_a_plan_exported_to_onnx_writes_the_same_submission(hand_runs, dataset_root, monkeypatch):
    """export.py --plan: every fold model of the members as an .onnx file, and a plan over them that ensemble.py
    --plan runs through ONNX Runtime to the checkpoints' submission (thresholds, TTA, post-processing kept)."""
    tmp, _, _ = hand_runs
    monkeypatch.chdir(tmp)
    plan = make_plan(["a", "b"], "deploy_plan.yaml", steps=4, num_workers=0, progress=False)
    assert export.main(["--plan", "deploy_plan.yaml", "--out", "deploy"]) == 0
    models = [c for m in plan["members"] for c in m["checkpoints"]]
    deployed = read_plan(tmp / "deploy" / "plan.yaml")
    paths = [c["path"] for m in deployed["members"] for c in m["checkpoints"]]
    assert len(paths) == len(models) and all(p.startswith("deploy/") and p.endswith(".onnx") for p in paths)
    assert [c["tta"] for m in deployed["members"] for c in m["checkpoints"]] == [c["tta"] for c in models]
    assert deployed["thresholds"] == plan["thresholds"] and deployed["exported_from"] == "deploy_plan.yaml"
    assert sorted(p.name for p in (tmp / "deploy").iterdir()) == sorted(
        [Path(p).name for p in paths] + ["plan.yaml", "plan.md", "plan.html"])

    apply_plan("deploy_plan.yaml", "pt.csv", num_workers=0, progress=False)
    apply_plan("deploy/plan.yaml", "onnx.csv", num_workers=0, progress=False)
    classes = plan["task"]["classes"]
    assert positive_pixels(tmp / "pt.csv", classes) > 0  # masks to compare, not two empty submissions
    assert differing_fraction(tmp / "pt.csv", tmp / "onnx.csv", dataset_root, classes) < MAX_DIFFERING_PIXELS

    with pytest.raises(UserError, match=r"--out deploy: output folder exists and is not empty"):
        export.main(["--plan", "deploy_plan.yaml", "--out", "deploy"])
    with pytest.raises(UserError, match=r"^--image-size: not with --plan"):
        export.main(["--plan", "deploy_plan.yaml", "--out", "deploy2", "--image-size", "64"])


def _cli_error(main, argv, capsys) -> str:
    """An entry script's main run as `python script.py ...` runs it: exit status 2 and one line on stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: main([str(a) for a in argv]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_select_cli_errors(tmp_path, capsys):
    assert "a plan is a YAML file" in _cli_error(ensemble.main, ["--select", tmp_path, "--out", tmp_path / "p.csv"],
                                                 capsys)
    assert "takes run folders" in _cli_error(ensemble.main, ["--select", tmp_path / "nothing", "--out",
                                                              tmp_path / "plan.yaml"], capsys)
    assert "--select cannot be combined with --checkpoints" in _cli_error(
        ensemble.main, ["--select", tmp_path, "--checkpoints", "x.pt", "--out", tmp_path / "plan.yaml"], capsys)
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntask: {classes: [a]}\nmembers: [{run: r, weight: -1, checkpoints: []}]\n")
    assert "members[0].weight: expected a positive number" in _cli_error(
        ensemble.main, ["--plan", bad, "--out", tmp_path / "sub.csv"], capsys)
    bad.write_text("version: 1\ntask: {classes: [a]}\nmembers: [{run: r, weight: 1, checkpoints: "
                   "[{path: r/fold0/best.pt, tta: none, size: 1, mtime_ns: 1}]}]\npostprocess: {b: {}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: postprocess: unknown class 'b'"):
        read_plan(bad)


def test_inference_postprocess_from_the_config(tiny_checkpoint, tmp_path, capsys):
    """predict.postprocess for one run: masks of the post-processed submission are the largest components of
    the plain one's."""
    def run(out, *extra):
        assert inference.main(["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--threshold", "0.02",
                               "--workers", "0", "--no-progress", *extra]) == 0
        return read_submission(out, load_config(ROOT / "configs" / "demo.yaml").task.classes)

    plain = run(tmp_path / "plain.csv")
    cleaned = run(tmp_path / "pp.csv", "--set", "predict.postprocess={all: {largest_component: true}}")
    assert plain.keys() == cleaned.keys()
    differs = 0
    for name in plain:
        for before, after in zip(plain[name], cleaned[name]):
            m0, m1 = decode_rle(before, 128, 128).astype(bool), decode_rle(after, 128, 128).astype(bool)
            assert np.array_equal(m1, clean_mask(m0, PostprocessOps(largest_component=True)))
            differs += not np.array_equal(m0, m1)
    assert differs > 0  # the tiny model's low-threshold masks have several components somewhere


# ----------------------------------------------------------------------------------------------- trash


@pytest.fixture(scope="module")
def trash_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("select_trash")
    root = generate_trash(tmp / "trash", train=16, test=3, size=64, seed=2, progress=False)
    base = [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", "data.synthetic=null", "data.image_size=32",
            "data.batch_size=4", "data.val_batch_size=4", "data.num_workers=0", "data.cache_workers=1",
            "data.n_splits=2", "data.oversample=null", "transforms.copy_paste=null", "transforms.gpu=[]",
            "model.params={encoder_depth: 3, decoder_channels: [32, 16, 8]}", "trainer.epochs=1"]
    demo = ROOT / "configs" / "trash_demo.yaml"
    a = _train(load_config(demo, base), tmp / "a")
    b = _train(load_config(demo, base + ["optimizer.lr=5e-3", "predict.tta=hflip"]), tmp / "b")
    return tmp, root, a, b


def test_select_then_plan_trash(trash_runs, monkeypatch):
    tmp, root, _, _ = trash_runs
    monkeypatch.chdir(tmp)
    plan = make_plan(["a", "b"], "plan.yaml", steps=3, crf=True, num_workers=0, progress=False)
    oof = plan["out_of_fold"]
    assert plan["thresholds"] is None and oof["metric"] == "miou"
    steps = {r["step"]: r for r in oof["table"]}
    assert "DenseCRF" in steps and (plan["crf"] is not None) == (steps["DenseCRF"]["gain"] > 0)
    assert oof["score"] >= max(oof["runs"].values())
    for r in oof["table"]:
        if r["step"].startswith("post-process "):
            assert r["gain"] > 0 and r["step"].split(" ", 1)[1] in plan["postprocess"]

    # independent recomputation: one confusion matrix over the out-of-fold label maps
    task = build_task(load_config(ROOT / "configs" / "trash_demo.yaml"))
    classes = task.classes
    samples = {s.key: s for s in task.layout.fold(load_config(ROOT / "configs" / "trash_demo.yaml", [
        f"data.root={root}"]).data, 0)[0]}
    checked = read_plan(tmp / "plan.yaml")
    pp, crf = Postprocess.build(checked["postprocess"], classes, multiclass=True), checked["crf"]
    matrix = np.zeros((len(classes),) * 2, np.int64)
    index = json.loads((tmp / plan["members"][0]["run"] / "oof" / "index.json").read_text())["folds"]
    for entry in index.values():
        for key in entry["keys"]:
            _, truth, size, _ = task.layout.process(samples[key], None)
            mean, total = None, 0.0
            for m in plan["members"]:
                path = tmp / m["run"] / "oof" / f"fold{entry['fold']}" / key.replace(".jpg", ".npz")
                p = torch.from_numpy(np.load(path)["probs"]).float().div_(255)
                up = F.interpolate(p[None], size=size, mode="bilinear", align_corners=False)[0] * float(m["weight"])
                mean, total = (up if mean is None else mean + up), total + m["weight"]
            mean = (mean / total).numpy()
            if crf is not None:
                mean = dense_crf(task.layout.read_image(samples[key].image), mean, crf.iterations, crf.gaussian_sxy,
                                 crf.gaussian_compat, crf.bilateral_sxy, crf.bilateral_srgb, crf.bilateral_compat)
            labels = mean.argmax(0).astype(np.uint8)
            labels = labels if pp is None else pp.labels(labels)
            matrix += np.bincount(truth.astype(np.int64).ravel() * len(classes) + labels.ravel(),
                                  minlength=len(classes) ** 2).reshape(matrix.shape)
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    assert float((tp[union > 0] / union[union > 0]).mean()) == pytest.approx(oof["score"], abs=1e-12)

    apply_plan("plan.yaml", "sub.csv", num_workers=0, progress=False)
    assert validate_trash_submission(tmp / "sub.csv", root / "test.json", len(classes)) == []
