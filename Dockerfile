# rene-onnx on a CUDA machine: onnxruntime-gpu's CUDA execution provider for
# validation / latency, torch for search and fine-tuning.
# Not built in this project's CI (its machines have no Docker engine).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

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
RUN pip install . && python -c "import rene_onnx.passes, rene_onnx.models"

WORKDIR /work
ENTRYPOINT ["rene-onnx"]
CMD ["--help"]
