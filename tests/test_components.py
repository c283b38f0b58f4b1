"""Models, losses, optimizers and schedulers build by name from the config, with one-line errors otherwise."""
import pytest
import torch

from losses.factory import LOSSES, build_loss
from models.factory import build_model
from schedulers.factory import SCHEDULERS, Schedule
from trainer.optim import OPTIMIZERS, build_optimizer
from utils.config import LossConfig, LossTerm, ModelConfig, OptimizerConfig, SchedulerConfig
from utils.errors import ConfigError

ARCHS = ["Unet", "UnetPlusPlus", "DeepLabV3", "DeepLabV3Plus", "FPN", "MAnet", "PSPNet", "PAN", "Linknet", "UPerNet",
         "Segformer"]


@pytest.mark.parametrize("arch", ARCHS)
def test_smp_architectures_give_multilabel_logits(arch):
    model = build_model(ModelConfig(arch=arch, encoder="resnet18", in_channels=1), num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 128, 128))  # PAN needs at least 128 pixels
    assert out.shape == (1, 5, 128, 128)


def test_timm_encoder_and_torchvision_fcn():
    model = build_model(ModelConfig(arch="Unet", encoder="tu-regnetx_002"), num_classes=3).eval()
    assert model(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    fcn = build_model(ModelConfig(arch="fcn_resnet50"), num_classes=3).eval()
    with torch.no_grad():
        assert fcn(torch.randn(1, 1, 64, 64)).shape == (1, 3, 64, 64)


def test_local_encoder_weights(tmp_path):
    source = build_model(ModelConfig(arch="Unet", encoder="resnet18"), num_classes=3)
    torch.save(source.encoder.state_dict(), tmp_path / "encoder.pth")
    model = build_model(ModelConfig(arch="FPN", encoder="resnet18", encoder_weights=str(tmp_path / "encoder.pth")), 3)
    assert torch.equal(model.encoder.conv1.weight, source.encoder.conv1.weight)
    with pytest.raises(ConfigError, match="file not found"):
        build_model(ModelConfig(encoder_weights=str(tmp_path / "missing.pth")), 3)


def test_model_errors():
    with pytest.raises(ConfigError, match="did you mean 'UnetPlusPlus'"):
        build_model(ModelConfig(arch="UnetPlusPlusx"), 3)
    with pytest.raises(ConfigError, match="cannot build Unet with encoder 'resnet9000'"):
        build_model(ModelConfig(arch="Unet", encoder="resnet9000"), 3)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_build_and_decrease_towards_target(name):
    loss = build_loss(LossConfig([LossTerm(name)]), "multilabel")
    target = (torch.rand(2, 3, 8, 8) > 0.5).float()
    good, bad = (target * 2 - 1) * 5, (1 - target * 2) * 5
    assert loss(good, target) < loss(bad, target)


def test_weighted_sum_of_losses():
    target = (torch.rand(2, 3, 8, 8) > 0.5).float()
    logits = torch.randn(2, 3, 8, 8)
    bce = build_loss(LossConfig([LossTerm("bce")]), "multilabel")(logits, target)
    dice = build_loss(LossConfig([LossTerm("dice")]), "multilabel")(logits, target)
    both = build_loss(LossConfig([LossTerm("bce", 0.5), LossTerm("dice", 2.0)]), "multilabel")(logits, target)
    assert torch.isclose(both, 0.5 * bce + 2.0 * dice)
    with pytest.raises(ConfigError, match=r"loss.terms\[0\].name: unknown loss 'dise' \(did you mean 'dice'\?\)"):
        build_loss(LossConfig([LossTerm("dise")]), "multilabel")
    with pytest.raises(ConfigError, match=r"loss.terms\[0\].params"):
        build_loss(LossConfig([LossTerm("dice", params={"nope": 1})]), "multilabel")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_build_and_step(name):
    model = torch.nn.Linear(4, 1)
    opt = build_optimizer(OptimizerConfig(name=name, lr=1e-2), model)
    before = model.weight.detach().clone()
    model(torch.randn(8, 4)).pow(2).mean().backward()
    opt.step()
    assert not torch.equal(before, model.weight)
    if name == "lion":
        from timm.optim import Lion
        assert isinstance(opt, Lion)


def test_optimizer_errors():
    with pytest.raises(ConfigError, match="did you mean 'adamw'"):
        build_optimizer(OptimizerConfig(name="adamww"), torch.nn.Linear(2, 2))


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_schedulers_with_warmup(name):
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    schedule = Schedule(opt, SchedulerConfig(name=name, warmup_epochs=1, warmup_start_factor=0.1), steps_per_epoch=4,
                        epochs=10)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(4):
        schedule.after_step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(1.0)
    assert lrs == sorted(lrs)
    for epoch in range(9):
        opt.step()
        schedule.after_epoch(0.5)  # a flat score: the plateau scheduler lowers the rate after its patience
        schedule.after_step()
    assert opt.param_groups[0]["lr"] < 1.0
    state = schedule.state_dict()
    other = Schedule(torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0),
                     SchedulerConfig(name=name, warmup_epochs=1), 4, 10)
    other.load_state_dict(state)
    assert other.steps == schedule.steps


def test_scheduler_errors():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=1.0)
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        Schedule(opt, SchedulerConfig(name="cosin"), 1, 1)
