"""EMA and SWA of the weights: the averages against a hand computation, and end to end through a checkpoint."""
import pytest
import torch

from trainer.averaging import WeightAverager
from trainer.inference import load_member, member_config
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import AveragingConfig


def _snapshots(model, optimizer, n):
    """Take n optimizer steps on random data; return the weight after each step."""
    out = []
    for _ in range(n):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        out.append(model.weight.detach().clone())
    return out


def test_ema_matches_hand_computation():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    averager = WeightAverager(AveragingConfig(mode="ema", ema_decay=0.9), model, opt, epochs=1)
    expected = None
    for _ in range(5):
        w = _snapshots(model, opt, 1)[0]
        averager.after_step(model)
        expected = w if expected is None else 0.9 * expected + 0.1 * w  # the first update copies the weights
    assert torch.allclose(averager.module.weight, expected, atol=1e-6)


def test_swa_matches_hand_computation():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    averager = WeightAverager(AveragingConfig(mode="swa", swa_start=0.5), model, opt, epochs=6)
    taken = []
    for epoch in range(6):
        w = _snapshots(model, opt, 2)[-1]
        averager.after_epoch(model, epoch)
        if epoch >= 3:
            taken.append(w)
    assert averager.count == 3
    assert torch.allclose(averager.module.weight, torch.stack(taken).mean(0), atol=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # SWALR annealed to lr / 10


@pytest.mark.parametrize("mode", ["ema", "swa"])
def test_averaged_weights_are_checkpointed_and_used_by_inference(tiny_config, tmp_path, mode):
    cfg = tiny_config(f"averaging.mode={mode}", "averaging.ema_decay=0.5", "averaging.swa_start=0.3", "trainer.epochs=3")
    result = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False).fit()
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert "averaged" in state and "averager" in state
    differs = any(not torch.equal(state["averaged"][k], state["model"][k]) for k in state["model"]
                  if state["model"][k].is_floating_point())
    assert differs, "averaged weights must differ from the raw ones"
    member_cfg = member_config(tmp_path / "run" / "last.pt")
    member = load_member(tmp_path / "run" / "last.pt", member_cfg, setup_runtime(member_cfg.trainer))
    for key, value in member.predictor.model.state_dict().items():
        assert torch.equal(value, state["averaged"][key])
    assert 0 <= result["best_dice"] <= 1
