"""MobileNetV2 with torchvision's official ImageNet weights through export (slow: a real model, real photos)."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

WEIGHTS = Path(__file__).resolve().parents[2] / ".assets" / "mobilenet_v2-b0353104.pth"


@pytest.mark.slow
@pytest.mark.skipif(not WEIGHTS.is_file(), reason="official MobileNetV2 weights missing: bash scripts/fetch_assets.sh")
def test_mobilenet_v2_int8_fp16_on_held_out_photos(tmp_path):
    from rene_onnx.data.photos import photo_crops, sample_photos, split_groups
    from rene_onnx.export import export_model
    from rene_onnx.load import load_torch

    model = load_torch("mobilenet_v2", weights=WEIGHTS).onnx_model
    x, groups = photo_crops(sample_photos(), 224, 8, seed=0)
    used, held = split_groups(groups, 0.3, seed=0)
    res = export_model(model, to="int8,fp16,ort", calib={"input": x[used]}, held_out={"input": x[held]},
                       output_dir=tmp_path / "edge", name="mnv2", calib_samples=64, layer_errors=False, repeats=10,
                       threads=1)
    for kind in ("int8", "fp16"):
        onnx.checker.check_model(str(res.paths[kind]), full_check=True)
    int8, fp16 = res.report.artifact("int8"), res.report.artifact("fp16")
    assert int8.size_ratio > 3.3 and 1.9 < fp16.size_ratio < 2.1
    assert int8.numerics["top1_agreement"] >= 0.5 and int8.numerics["top5_overlap"] >= 0.6
    assert fp16.numerics["top1_agreement"] >= 0.95
    assert int8.latency_ms["onnxruntime"]["speedup"] > 1.0  # INT8 beats FP32 at 1 thread on any x86 with AVX2
