#!/usr/bin/env bash
# onnxruntime CUDA-provider latency of the packed original / factorized pairs, on a GPU machine.
#
#   bash benchmarks/cuda_latency.sh ORT_DIR PACK_DIR OUT_DIR
#
# PACK_DIR: weight-stripped models + manifest from
#   .venv/bin/python benchmarks/latency.py --models resnet18,mobilenet_v2 --threads 1 --repeats 3 --warmup 1 \
#       --profile-repeats 2 --profile-rounds 1 --no-latency-aware --out /tmp/scratch.json --pack .latency_pack
# ORT_DIR: onnxruntime-gpu for the GPU machine's Python, for machines that have only the CPU
#   onnxruntime and no package index (the lent H200 here). The CUDA provider library alone is 271 MB,
#   so it travels xz-compressed in parts:
#     cuda.part.NN   split parts of xz(onnxruntime/capi/libonnxruntime_providers_cuda.so)
#     rest.tar.xz    the rest of the wheel (onnxruntime/ + dist-info, without the C-API libonnxruntime.so)
#   Made here with (one device call carries at most 64 MiB, so the parts went over in four calls, each
#   copying its part to /tmp/ort-parts there while the machine stayed warm):
#     pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 onnxruntime-gpu==1.31.1 -d whl && (cd whl && unzip -q *.whl)
#     xz -9e -T2 -c whl/onnxruntime/capi/libonnxruntime_providers_cuda.so > cuda.so.xz
#     split -n 4 -d cuda.so.xz ORT_DIR/cuda.part.
#     tar cf - -C whl --exclude=libonnxruntime_providers_cuda.so --exclude='libonnxruntime.so.*' \
#         onnxruntime onnxruntime_gpu-1.31.1.dist-info | xz -9 -T2 > ORT_DIR/rest.tar.xz
#   Pass ORT_DIR=- where `import onnxruntime` already has a working CUDA provider.
# RUNS (default "host device graph") picks the timing modes, each a benchmarks/latency.py measure-pack
# --provider cuda run per model / batch:
#   host    session.run with numpy in and out: host <-> device copies included (what a plain user call costs)
#   device  --device-io: inputs / outputs stay on the GPU (I/O binding): the model alone
#   graph   --cuda-graph: as device, replayed as a CUDA graph: no kernel-launch overhead
#   aware   as device, plus --latency-aware: each layer's dense node and chain timed as isolated sub-models
#           on the GPU, and the model with the chains that are not faster reverted to dense (ResNet-18, x16 ranks)
# Writes OUT_DIR/providers.json (which providers really start, CUDA vs CPU numerics) and
# OUT_DIR/cuda_<model>_b<batch>[_<mode>].json.
set -uo pipefail
ort_dir=$1 pack=$2 out=$3
mkdir -p "$out"
if [ "$ort_dir" != "-" ]; then
    site=/tmp/rene-ortgpu
    rm -rf "$site" && mkdir -p "$site"
    tar xJf "$ort_dir/rest.tar.xz" -C "$site" || exit 1
    cat "$ort_dir"/cuda.part.* | xz -d > "$site/onnxruntime/capi/libonnxruntime_providers_cuda.so" || exit 1
    export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
# CUDA 13 / cuDNN 9 libraries from the machine's pip-installed nvidia packages or its toolkit.
libs=$(find /opt /usr/local /usr/lib \( -name 'libcudnn.so.9' -o -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' \
        -o -name 'libcurand.so.10' -o -name 'libcufft.so.12' -o -name 'libnvinfer.so.10' \) 2>/dev/null \
       | xargs -r -n1 dirname | sort -u | paste -sd: -)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
RUNS=${RUNS:-host device graph aware}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee /tmp/rene-gpu.txt

python3 - "$pack" "$out" <<'EOF'
import json, sys, tempfile, time
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
from benchmarks.latency import refill_weights
from rene_onnx.validate.numerics import ProviderUnavailable, make_session

pack, out = Path(sys.argv[1]), Path(sys.argv[2])
res = {"onnxruntime": ort.__version__, "onnxruntime_file": ort.__file__,
       "available": ort.get_available_providers(), "gpu": Path("/tmp/rene-gpu.txt").read_text().strip(), "providers": {}}
with tempfile.TemporaryDirectory() as tmp:
    for name in ("resnet18.onnx", "resnet18_tt_0.25_m16.onnx"):
        path = Path(tmp) / name
        onnx.save(refill_weights(onnx.load(pack / name)), path)
        x = np.load(pack / "resnet18_feeds.npz")
        feeds = {k: x[k] for k in x.files}
        ref = make_session(path, "cpu").run(None, feeds)[0]
        for provider in ("cuda", "tensorrt"):
            key = f"{name}@{provider}"
            t0 = time.perf_counter()
            try:
                sess = make_session(path, provider)
                y = sess.run(None, feeds)[0]
                res["providers"][key] = {"active": sess.get_providers(), "start_s": round(time.perf_counter() - t0, 2),
                                         "max_abs_diff_vs_cpu": float(np.abs(y - ref).max()),
                                         "max_abs_ref": float(np.abs(ref).max())}
            except ProviderUnavailable as e:
                res["providers"][key] = {"error": str(e).splitlines()[0][:400]}
print(json.dumps(res, indent=1))
(out / "providers.json").write_text(json.dumps(res, indent=1) + "\n")
EOF

run() {  # mode model batch repeats [extra measure-pack args]; TMO=seconds
    local mode=$1 model=$2 batch=$3 repeats=$4; shift 4
    local flag="" suffix="_$mode"
    case $mode in host) suffix="" ;; device) flag=--device-io ;; graph) flag=--cuda-graph ;;
                  aware) flag="--device-io --latency-aware" ;; esac
    timeout "$TMO" python3 benchmarks/latency.py --models "$model" measure-pack "$pack" --provider cuda --threads 0 \
        --batch "$batch" --repeats "$repeats" --warmup 10 $flag --out "$out/cuda_${model}_b${batch}${suffix}.json" "$@"
}
m16=resnet18_tt_0.25_m16,resnet18_cp_0.25_m16,resnet18_svd_0.25_m16
for mode in $RUNS; do
    if [ "$mode" = aware ]; then
        TMO=150 run aware resnet18 1 50 --no-study --only $m16,${m16//0.25/0.5}
        TMO=90 run aware resnet18 32 30 --no-study --only $m16
        continue
    fi
    study=--no-study; [ "$mode" = host ] && study=""
    TMO=200 run "$mode" resnet18 1 100 $study
    TMO=140 run "$mode" resnet18 32 50 --no-study
    TMO=140 run "$mode" mobilenet_v2 1 100 --no-study
done
