#!/usr/bin/env bash
# Inference images/s of the standard families (resnet18, mobilenetv2, vgg16-bn; CIFAR variants)
# in cnnsplitter (ONNX Runtime and burn) and PyTorch (eager, channels_last), in one run, 2 threads.
# Needs the PyTorch environment of ../shared/bench/setup-torch.sh and, for the ort engine,
# ORT_DYLIB_PATH. Prints one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TORCH_REF_VENV:-${TMPDIR:-/tmp}/torch-ref-venv}"
threads=${THREADS:-2}
cargo build --release --quiet
for arch in resnet18 mobilenetv2 vgg16-bn; do
    for engine in ort burn; do
        target/release/cnnsplitter --threads "$threads" bench infer --arch "$arch" --engine "$engine" --batch 256 --iters 3 --json
    done
done
(cd scripts && "$venv/bin/python" bench_families_torch.py --threads "$threads" --iters 3)
