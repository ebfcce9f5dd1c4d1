"""The model zoo: registry, torchvision-compatible layouts, forward passes, the demo checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rene_onnx import models
from rene_onnx.models import train_demo

ALL = ["digits_resnet", "mobilenet_v2", "resnet18", "resnet20", "resnet20_fmnist", "resnet32", "resnet34", "resnet56",
       "resnet8_fmnist", "vgg16_bn"]

# parameter counts: torchvision's published numbers for the ImageNet models; the CIFAR ResNets are
# He et al.'s option-A counts plus the option-B projections (ResNet-20: 269,722 + 576 + 2,176)
PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "mobilenet_v2": 3_504_872,
    "resnet20": 272_474, "resnet32": 466_906, "resnet56": 855_770,
    "vgg16_bn": 15_253_578, "digits_resnet": 169_834,
    "resnet20_fmnist": 272_186,  # resnet20 with a 1-channel stem: 272,474 - 16 * 2 * 9
    "resnet8_fmnist": 77_754,  # one block per stage: resnet20_fmnist less 2 blocks of each width
}


def _n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_every_model():
    assert models.list_models() == ALL


def test_unknown_model_is_a_value_error_listing_names():
    with pytest.raises(ValueError, match="unknown model 'resnet99'.*resnet18.*vgg16_bn"):
        models.build("resnet99")
    for f in (models.input_shape, models.default_checkpoint, models.default_dataset):
        with pytest.raises(ValueError, match="known models"):
            f("nope")


def test_bad_num_classes_and_missing_checkpoint():
    with pytest.raises(ValueError, match="num_classes"):
        models.build("resnet20", num_classes=0)
    with pytest.raises(ValueError, match="no shipped checkpoint.*digits_resnet"):
        models.build("resnet20", pretrained=True)
    with pytest.raises(ValueError, match="10 classes"):
        models.build("digits_resnet", num_classes=5, pretrained=True)


@pytest.mark.parametrize("name", ALL)
def test_every_model_builds_and_runs_at_its_input_shape(name):
    torch.manual_seed(0)
    model = models.build(name).eval()
    shape = models.input_shape(name)
    assert shape[0] == 1 and len(shape) == 4
    with torch.no_grad():
        out = model(torch.randn(shape))
    classes = 1000 if name in ("resnet18", "resnet34", "mobilenet_v2") else 10
    assert out.shape == (1, classes)
    assert torch.isfinite(out).all()
    assert _n_params(model) == PARAMS[name]


@pytest.mark.parametrize("name", ["resnet20", "vgg16_bn", "digits_resnet"])
def test_num_classes_override(name):
    model = models.build(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(models.input_shape(name))).shape == (1, 7)


def _shapes(name):
    return {k: tuple(v.shape) for k, v in models.build(name).state_dict().items()}


def test_resnet18_has_torchvision_keys():
    sd = _shapes("resnet18")
    assert len(sd) == 122
    expected = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,), "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 3, 3), "layer1.1.bn2.bias": (64,),
        "layer2.0.conv1.weight": (128, 64, 3, 3), "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_var": (128,), "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer4.0.downsample.1.weight": (512,), "layer4.1.conv2.weight": (512, 512, 3, 3),
        "fc.weight": (1000, 512), "fc.bias": (1000,),
    }
    assert {k: sd[k] for k in expected} == expected
    assert not any(k.startswith(("layer1.0.downsample", "layer2.1.downsample")) for k in sd)
    assert sum(".downsample.0.weight" in k for k in sd) == 3
    assert sum(k.endswith(".conv1.weight") for k in sd) == 8  # one per BasicBlock


def test_resnet34_has_torchvision_keys():
    sd = _shapes("resnet34")
    assert len(sd) == 218
    assert sd["layer3.5.conv2.weight"] == (256, 256, 3, 3)
    assert sd["layer4.2.bn2.num_batches_tracked"] == ()
    assert sd["layer2.3.conv1.weight"] == (128, 128, 3, 3)
    assert "layer1.3.conv1.weight" not in sd and "layer4.3.conv1.weight" not in sd
    assert sd["fc.weight"] == (1000, 512)


def test_mobilenet_v2_has_torchvision_keys():
    sd = _shapes("mobilenet_v2")
    assert len(sd) == 314
    expected = {
        "features.0.0.weight": (32, 3, 3, 3), "features.0.1.weight": (32,),
        "features.1.conv.0.0.weight": (32, 1, 3, 3), "features.1.conv.0.1.running_mean": (32,),
        "features.1.conv.1.weight": (16, 32, 1, 1), "features.1.conv.2.weight": (16,),
        "features.2.conv.0.0.weight": (96, 16, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
        "features.2.conv.2.weight": (24, 96, 1, 1), "features.2.conv.3.running_var": (24,),
        "features.14.conv.1.0.weight": (576, 1, 3, 3), "features.17.conv.2.weight": (320, 960, 1, 1),
        "features.18.0.weight": (1280, 320, 1, 1), "features.18.1.bias": (1280,),
        "classifier.1.weight": (1000, 1280), "classifier.1.bias": (1000,),
    }
    assert {k: sd[k] for k in expected} == expected
    assert "features.19.0.weight" not in sd and "features.1.conv.3.weight" not in sd


def test_cifar_models_layout():
    sd = _shapes("resnet56")
    assert sd["conv1.weight"] == (16, 3, 3, 3)
    assert sd["layer3.8.conv2.weight"] == (64, 64, 3, 3)
    assert sd["layer2.0.downsample.0.weight"] == (32, 16, 1, 1)  # option-B projection
    assert sd["fc.weight"] == (10, 64)
    convs = [k for k, s in sd.items() if k.endswith("weight") and len(s) == 4 and s[-1] == 3]
    assert len(convs) == 55  # 6n+1 3x3 convs (+ fc = 56 weighted layers)
    vgg = _shapes("vgg16_bn")
    assert sum(len(s) == 4 for s in vgg.values()) == 13
    assert vgg["features.0.weight"] == (64, 3, 3, 3) and vgg["features.1.running_mean"] == (64,)
    assert vgg["classifier.1.weight"] == (512, 512) and vgg["classifier.6.weight"] == (10, 512)


def test_defaults():
    assert models.input_shape("digits_resnet") == (1, 1, 8, 8)
    assert models.input_shape("resnet18") == (1, 3, 224, 224)
    assert models.input_shape("resnet20") == (1, 3, 32, 32)
    assert models.default_dataset("digits_resnet") == "digits"
    assert models.default_dataset("resnet18") is None
    assert models.default_checkpoint("resnet56") is None
    ckpt = models.default_checkpoint("digits_resnet")
    assert ckpt is not None and ckpt.is_file() and ckpt.stat().st_size < 2_000_000


def test_demo_checkpoint_reaches_recorded_accuracy():
    ckpt = models.default_checkpoint("digits_resnet")
    info = json.loads(ckpt.with_suffix(".json").read_text())
    for key in ("test_top1", "calib_top1", "epochs", "seconds", "seed", "command", "torch_version"):
        assert key in info
    assert info["test_top1"] >= 97.0
    sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    model = models.build("digits_resnet")
    model.load_state_dict(sd)
    from rene_onnx.data import load_dataset

    data = load_dataset(models.default_dataset("digits_resnet"), seed=info["seed"])
    top1, _ = train_demo.evaluate(model, *data.test.tensors())
    assert abs(top1 - info["test_top1"]) <= 0.5
    calib, _ = train_demo.evaluate(model, *data.calib.tensors())
    assert abs(calib - info["calib_top1"]) <= 0.5
    # build(pretrained=True) is the same model, in eval mode
    pre = models.build("digits_resnet", pretrained=True)
    assert not pre.training
    assert all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(), sd.values()))


def test_shift_augmentation_translates():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    out = train_demo._shift(x, 1, -1.0, g)
    assert out.shape == x.shape
    for i in range(2):  # every output is the input moved by (dy, dx) in [-1, 1]^2, padded with -1
        padded = torch.nn.functional.pad(x[i], (1, 1, 1, 1), value=-1.0)
        assert any(torch.equal(out[i], padded[:, dy:dy + 4, dx:dx + 4]) for dy in range(3) for dx in range(3))


def test_train_is_deterministic_and_saves(tmp_path):
    cfg = train_demo.TrainConfig(epochs=2, batch_size=128)
    a = train_demo.train(cfg)
    b = train_demo.train(cfg)
    assert a.test_top1 == b.test_top1 and a.best_epoch == b.best_epoch
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert len(a.history) == 2 and a.test_top1 > 20.0  # 2 warm-up epochs already beat chance (10%)
    pt, js = train_demo.save(a, cfg, tmp_path, "test")
    sd = torch.load(pt, weights_only=True)
    assert set(sd) == set(models.build("digits_resnet").state_dict())
    info = json.loads(js.read_text())
    assert info["epochs"] == 2 and info["command"] == "test" and info["test_top1"] == round(a.test_top1, 4)
    with pytest.raises(ValueError, match="epochs"):
        train_demo.train(train_demo.TrainConfig(epochs=0))


def _export_and_compare(name, path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = models.build(name, pretrained=models.default_checkpoint(name) is not None).eval()
    x = torch.randn(models.input_shape(name), generator=torch.Generator().manual_seed(0))
    torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, opset_version=18)
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-3, atol=1e-4)
    return {i.name for i in m.graph.initializer}


def test_demo_model_exports_to_onnx(tmp_path):
    names = _export_and_compare("digits_resnet", tmp_path / "digits.onnx")
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "fc.weight"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in ALL if n != "digits_resnet"])
def test_zoo_model_exports_to_onnx(tmp_path, name):
    names = _export_and_compare(name, tmp_path / f"{name}.onnx")
    conv = {"resnet18": "layer4.1.conv2.weight", "resnet34": "layer3.5.conv2.weight", "resnet20": "layer3.2.conv2.weight",
            "resnet20_fmnist": "layer3.2.conv2.weight", "resnet8_fmnist": "layer3.0.conv2.weight",
            "resnet32": "layer3.4.conv2.weight", "resnet56": "layer3.8.conv2.weight", "vgg16_bn": "features.40.weight",
            "mobilenet_v2": "features.17.conv.2.weight"}[name]
    assert conv in names  # BN folded into the conv, torch weight names kept
