# rene-onnx on a CUDA machine: onnxruntime-gpu's CUDA execution provider for
# validation / latency, torch for search and fine-tuning.
# Not built in this project's CI (its machines have no Docker engine).
# onnxruntime-gpu from PyPI (1.31) links CUDA 13 (libcublasLt.so.13, libcudart.so.13) and cuDNN 9: on a
# CUDA 12 image its CUDA provider fails to load and sessions fall back to the CPU. onnxruntime-gpu 1.31.1
# with the CUDA 13.0 libraries and cuDNN 9 ran the CUDA provider on an H200 (benchmarks/cuda_latency.sh).
FROM nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv

WORKDIR /src
# torch + torchvision first (CUDA wheels), so the project install resolves nothing else for them.
RUN pip install "torch==2.14.1" "torchvision==0.29.1"
COPY pyproject.toml README.md ./
COPY rene_onnx ./rene_onnx
COPY passes ./passes
COPY models ./models
RUN pip install . "onnxruntime-gpu==1.31.1" && python -c "import rene_onnx.passes, rene_onnx.models"

WORKDIR /work
ENTRYPOINT ["rene-onnx"]
CMD ["--help"]
