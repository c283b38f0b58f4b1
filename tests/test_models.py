"""Every named architecture at a small size (64-128 px, 29 classes): build with 1 and 3 input channels, forward and
backward, one Trainer step on crops, a checkpoint round trip and a sliding-window prediction; plug-in models and
losses; the errors of each. One fast representative per architecture runs by default, the rest with `-m slow`."""
import pytest
import torch
from torch import nn

from losses.factory import build_loss
from models.factory import build_model
from tests.conftest import ROOT, tiny_overrides
from trainer.checkpoint import load_checkpoint, save_checkpoint
from trainer.predictor import Predictor
from trainer.runtime import setup_runtime
from trainer.trainer import Trainer
from utils.config import LossConfig, LossTerm, ModelConfig, from_dict, load_config
from utils.errors import ConfigError

# name: (model.arch, model.encoder, model.params), each as small as the code path allows
FAST = {
    "SwinUNETR": ("SwinUNETR", "", {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [3, 3, 3, 3]}),
    "EffiSegNet-b0": ("EffiSegNet", "tu-efficientnet_b0", {"channels": 8}),
    "HRNetOCR-w18s": ("HRNetOCR", "hrnet_w18_small", {"mid_channels": 32, "key_channels": 16}),
    "UPerNet-ConvNeXt": ("UPerNet", "tu-convnext_atto", {"decoder_channels": 32}),
    "UNet++-HRNet": ("UnetPlusPlus", "tu-hrnet_w18_small", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "Segformer-MiT-b0": ("Segformer", "mit_b0", {"decoder_segmentation_channels": 32}),
}
SLOW = {
    "UPerNet-Swin": ("UPerNet", "tu-swin_tiny_patch4_window7_224", {"img_size": 64, "decoder_channels": 32}),
    "UNet++-MaxViT": ("UnetPlusPlus", "tu-maxvit_pico_rw_256", {"img_size": 64, "decoder_channels": [32, 16, 8, 8, 8]}),
    "UNet++-EfficientNetV2": ("UnetPlusPlus", "tu-tf_efficientnetv2_b0", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "UNet++-VGG19": ("UnetPlusPlus", "vgg19", {"decoder_channels": [32, 16, 8, 8, 8]}),
    "EffiSegNet-smp-b0": ("EffiSegNet", "efficientnet-b0", {"channels": 8}),
    "HRNetOCR-w18": ("HRNetOCR", "hrnet_w18", {"mid_channels": 32, "key_channels": 16}),
}
CASES = [pytest.param(*spec, id=name) for name, spec in FAST.items()] + [
    pytest.param(*spec, id=name, marks=pytest.mark.slow) for name, spec in SLOW.items()]


def model_overrides(arch, encoder, params) -> list[str]:
    inline = ", ".join(f"{k}: {v}" for k, v in params.items())
    return [f"model.arch={arch}", f"model.encoder={encoder or 'none'}", f"model.params={{{inline}}}"]


@pytest.fixture(scope="module")
def crop_config(dataset_root, tmp_path_factory):
    """128 px images trained on 64 px crops and predicted by 64 px sliding windows (the SwinUNETR recipe)."""
    cache = tmp_path_factory.mktemp("cache")

    def make(*extra: str):
        return load_config(ROOT / "configs" / "demo.yaml", tiny_overrides(dataset_root, cache) + [
            "data.image_size=128", "data.crop_size=64", "predict.mode=sliding", "predict.window=64",
            "predict.overlap=0.25", "trainer.channels_last=false"] + list(extra))
    return make


@pytest.mark.parametrize(("arch", "encoder", "params"), CASES)
def test_three_channels_forward_backward_step(arch, encoder, params):
    """3-channel inputs (an RGB-pretrained encoder kept as is); the 1-channel case trains in the test below."""
    model = build_model(ModelConfig(arch=arch, encoder=encoder, in_channels=3, params=params), 29)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.randn(2, 3, 64, 64))
    main = out[0] if isinstance(out, tuple) else out
    assert main.shape == (2, 29, 64, 64)
    build_loss(LossConfig(), "multilabel")(out, torch.rand(2, 29, 64, 64).round()).backward()
    # end to end: the input layer and the head get gradients (some smp models hold parameters their forward never
    # uses: efficientnet-b*'s conv_head, UNet++/VGG's decoder.center)
    params = [p for p in model.parameters() if p.requires_grad]
    assert params[0].grad is not None and params[-1].grad is not None
    assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


@pytest.mark.parametrize(("arch", "encoder", "params"), CASES)
def test_trains_checkpoints_and_slides(crop_config, tmp_path, arch, encoder, params):
    """1 channel, through the Trainer: a step on 64 px crops, a checkpoint round trip, a sliding-window prediction
    of a 128 px image by the restored model."""
    cfg = crop_config(*model_overrides(arch, encoder, params))
    trainer = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    loss = trainer.train_step(next(iter(trainer.train_loader)))
    assert torch.isfinite(loss) and loss > 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())

    save_checkpoint(trainer._state(0, {}), tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt")
    restored = build_model(from_dict(state["config"]).model, len(state["classes"])).eval()
    restored.load_state_dict(state["model"])
    window = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(restored(window), trainer.model.eval()(window))

    image = next(iter(trainer.val_loader))["image"][:1]
    assert image.shape[-1] == 128  # 3 x 3 overlapping 64 px windows
    probs = Predictor(restored, cfg.predict, trainer.runtime, cfg.data.mean, cfg.data.std)(image)
    assert probs.shape == (1, 29, 128, 128) and probs.min() >= 0 and probs.max() <= 1


def test_auxiliary_output_trained_with_its_weight_and_dropped_in_eval():
    model = build_model(ModelConfig(arch="HRNetOCR", encoder="hrnet_w18_small", params=FAST["HRNetOCR-w18s"][2]), 29)
    x, target = torch.randn(2, 1, 64, 64), torch.rand(2, 29, 64, 64).round()
    main, aux = model.train()(x)
    assert main.shape == aux.shape == (2, 29, 64, 64)
    assert isinstance(model.eval()(x), torch.Tensor)
    loss = build_loss(LossConfig(aux_weight=0.25), "multilabel")
    torch.testing.assert_close(loss((main, aux), target), loss(main, target) + 0.25 * loss(aux, target))


PLUGIN = '''
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, in_channels, classes, width=8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, classes, 1))

    def forward(self, x):
        return self.body(x)


def soft_dice(smooth=1.0):
    def loss(logits, target):
        p = logits.sigmoid()
        return 1 - (2 * (p * target).sum() + smooth) / (p.sum() + target.sum() + smooth)
    return loss


def wrong_loss():
    return lambda logits: logits.mean()
'''


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(PLUGIN)
    return path


def test_plugin_model_and_loss_from_a_file_train_one_step(tiny_config, tmp_path, plugin_file):
    cfg = tiny_config(f"model.arch={plugin_file}:TinyNet", "model.encoder=none", "model.params={width: 4}",
                      f"loss.terms=[{{name: bce}}, {{name: '{plugin_file}:soft_dice', weight: 0.5, params: {{smooth: 2.0}}}}]")
    trainer = Trainer(cfg, tmp_path / "run", setup_runtime(cfg.trainer), progress=False)
    assert type(trainer.model).__name__ == "TinyNet" and trainer.model.body[0].out_channels == 4
    head_bias = trainer.model.body[2].bias.detach().clone()
    assert torch.allclose(head_bias, torch.full_like(head_bias, -4.59512), atol=1e-4)  # head_prior 0.01 applied
    loss = trainer.train_step(next(iter(trainer.train_loader)))
    assert torch.isfinite(loss) and not torch.equal(head_bias, trainer.model.body[2].bias)


def test_plugin_by_module_path(plugin_file, monkeypatch):
    monkeypatch.syspath_prepend(str(plugin_file.parent))
    model = build_model(ModelConfig(arch="my_models:TinyNet", in_channels=3, params={"width": 5}), 29)
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 29, 16, 16)
    torch.save(model.state_dict(), plugin_file.parent / "tiny.pt")  # its own weights, as a local weights file
    again = build_model(ModelConfig(arch="my_models:TinyNet", in_channels=3, params={"width": 5},
                                    encoder_weights=str(plugin_file.parent / "tiny.pt")), 29)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ConfigError) as error:  # Conv2d takes out_channels, not classes
        build_model(ModelConfig(arch="torch.nn:Conv2d", params={"kernel_size": 1}), 29)
    assert str(error.value).startswith("model.arch: torch.nn:Conv2d cannot be called with (in_channels, classes, "
                                       "kernel_size)")


@pytest.mark.parametrize(("arch", "message"), [
    ("no_such_package.models:Net", r"model.arch: cannot import 'no_such_package.models' \(ModuleNotFoundError"),
    ("missing_dir/net.py:Net", r"model.arch: file not found: missing_dir/net.py"),
    ("{file}:Missing", r"model.arch: .*my_models.py has no attribute 'Missing'"),
    ("{file}:TinyNet", r"model.arch: .*TinyNet cannot be called with \(in_channels, classes, depth\)"),
    ("{file}:", r"model.arch: .* is not 'package.module:Name' or 'path/to/file.py:Name'"),
    ("{file}:soft_dice", r"model.arch: .*soft_dice cannot be called with"),
    ("Swinunetr2", r"model.arch: unknown architecture 'Swinunetr2' \(did you mean 'SwinUNETR'\?\); a plug-in is"),
])
def test_plugin_model_errors_are_one_line(plugin_file, arch, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_model(ModelConfig(arch=arch.format(file=plugin_file), params={"depth": 3}), 29)
    assert "\n" not in str(error.value)


def test_plugin_file_that_fails_to_import(tmp_path):
    (tmp_path / "broken.py").write_text("import torch\ndef Net(:\n")
    with pytest.raises(ConfigError, match=r"model.arch: cannot import .*broken.py \(SyntaxError") as error:
        build_model(ModelConfig(arch=f"{tmp_path / 'broken.py'}:Net"), 29)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("name", "params", "message"), [
    ("{file}:soft_dice", {"smoth": 1}, r"loss.terms\[0\].name: .*soft_dice cannot be called with \(smoth\)"),
    ("{file}:wrong_loss", {}, r"loss.terms\[0\].name: .*wrong_loss\(\*\*params\) returned a loss that cannot be "
                              r"called as \(logits, target\)"),
    ("no_such_package:loss", {}, r"loss.terms\[0\].name: cannot import 'no_such_package'"),
    ("dise", {}, r"loss.terms\[0\].name: unknown loss 'dise' \(did you mean 'dice'\?\); a plug-in is written"),
])
def test_plugin_loss_errors_are_one_line(plugin_file, name, params, message):
    with pytest.raises(ConfigError, match=message) as error:
        build_loss(LossConfig([LossTerm(name.format(file=plugin_file), params=params)]), "multilabel")
    assert "\n" not in str(error.value)


def test_swinunetr_local_weights_load_what_fits(tmp_path, capsys):
    """MONAI's self-supervised file names the Swin encoder's tensors "module.<name>"; 3-D tensors do not fit 2-D."""
    params = FAST["SwinUNETR"][2]
    source = build_model(ModelConfig(arch="SwinUNETR", params=params, head_prior=None), 29)
    state = {f"module.{k}": v for k, v in source.encoder.state_dict().items()}
    state["module.patch_embed.proj.weight"] = torch.zeros(12, 1, 2, 2, 2)  # a 3-D patch embedding
    state["module.rotation_head.weight"] = torch.zeros(4, 4)  # a pretraining head the model does not have
    torch.save({"state_dict": state}, tmp_path / "model_swinvit.pt")
    model = build_model(ModelConfig(arch="SwinUNETR", params=params, encoder_weights=str(tmp_path / "model_swinvit.pt")), 29)
    loaded = model.encoder.state_dict()
    assert torch.equal(loaded["layers1.0.blocks.0.attn.qkv.weight"], source.encoder.state_dict()["layers1.0.blocks.0.attn.qkv.weight"])
    assert not torch.equal(loaded["patch_embed.proj.weight"], torch.zeros(12, 1, 2, 2))
    out = capsys.readouterr().out
    assert "1 encoder tensors were not in the file" in out and "2 tensors of the file do not fit the encoder" in out
    with pytest.raises(ConfigError, match="SwinUNETR takes null or a local file"):
        build_model(ModelConfig(arch="SwinUNETR", params=params, encoder_weights="imagenet"), 29)


def test_hrnet_ocr_needs_an_hrnet():
    with pytest.raises(ConfigError, match=r"model.encoder: HRNetOCR needs a timm HRNet .* not 'resnet34'"):
        build_model(ModelConfig(arch="HRNetOCR", encoder="resnet34"), 29)


def test_bad_size_parameter_is_one_line():
    with pytest.raises(ConfigError, match=r"model: cannot build SwinUNETR .*feature_size") as error:
        build_model(ModelConfig(arch="SwinUNETR", params={"feature_size": 10}), 29)
    assert "\n" not in str(error.value)


MODEL_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=[p.stem for p in MODEL_CONFIGS])
def test_shipped_config_builds_its_model(path):
    cfg = load_config(path)
    assert isinstance(build_model(cfg.model, len(cfg.task.classes)), nn.Module)
