import torch
from torch import nn

from rene_onnx.engine.fold import fold_batchnorm_


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 8, 1)  # its output feeds bn3 AND the residual: must not be folded
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)
        self.bn4 = nn.BatchNorm1d(4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        s = self.side(x)
        x = self.bn3(s) + s
        return self.bn4(self.fc(x.mean((2, 3))))


def _randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))


def test_fold_preserves_outputs_and_skips_shared_outputs():
    model = Net().eval()
    _randomize_bn(model)
    x = torch.randn(2, 3, 8, 8)
    ref = model(x)
    pairs = fold_batchnorm_(model)
    assert ("conv", "bn") in pairs and ("conv2", "bn2") in pairs and ("fc", "bn4") in pairs
    assert ("side", "bn3") not in pairs
    assert isinstance(model.bn, nn.Identity) and isinstance(model.bn3, nn.BatchNorm2d)
    assert model.conv.bias is not None  # created from the BN shift
    torch.testing.assert_close(model(x), ref, rtol=1e-4, atol=1e-5)


def test_fold_requires_eval_mode():
    import pytest

    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm_(Net().train())
