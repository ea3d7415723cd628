#!/usr/bin/env bash
# Runs cnnsplitter's inference benchmarks next to the PyTorch reference, in one run on one machine,
# and prints one JSON line per measurement.
# Usage: scripts/bench-vs-pytorch.sh [ARCH...]        (default: simcnn@0.25 simcnn rescnn@0.25)
# MODES limits what runs (default: "infer train modules"; "search" adds one generation-level
# comparison: `bench search` N = 10, P = 30, V = 2,000 against the reference's 300 modules over
# 2,000 images, the forward work of one generation of the original search).
# Needs ../shared/bench (setup-torch.sh, torch_reference.py); THREADS defaults to 2.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${THREADS:-2}
ref=../shared/bench
py=$("$ref/setup-torch.sh")
cargo build --release -q
bin=target/release/cnnsplitter
# The same ONNX Runtime the reference's `ort` variant uses.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$("$py" -c 'import onnxruntime, os, glob; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[-1])')
  export ORT_DYLIB_PATH
fi
archs=("$@"); [ ${#archs[@]} -gt 0 ] || archs=(simcnn@0.25 simcnn rescnn@0.25)
modes=${MODES:-infer train modules}
for spec in "${archs[@]}"; do
  arch=${spec%@*}; width=1; [[ $spec == *@* ]] && width=${spec#*@}
  if [[ $modes == *infer* ]]; then
  for engine in burn ort; do
    "$bin" --threads "$threads" bench infer --arch "$spec" --batch 256 --engine "$engine" --json
  done
  for variant in eager channels_last ort; do
    "$py" "$ref/torch_reference.py" infer --arch "$arch" --width "$width" --threads "$threads" --variant "$variant"
  done
  fi
  if [[ $modes == *train* ]]; then
  "$bin" --threads "$threads" bench train --arch "$spec" --batch 128 --iters 3 --json
  "$py" "$ref/torch_reference.py" train --arch "$arch" --width "$width" --threads "$threads" --iters 3
  fi
  if [[ $modes == *modules* ]]; then
  for engine in burn ort; do
    "$bin" --threads "$threads" bench modules --arch "$spec" --modules 20 --images 1000 --keep 0.5 --engine "$engine" --json
  done
  "$py" "$ref/torch_reference.py" modules --arch "$arch" --width "$width" --threads "$threads" --modules 20 --images 1000 --keep 0.5
  fi
  if [[ $modes == *search* ]]; then
  "$bin" --threads "$threads" bench search --arch "$spec" --classes 10 --population 30 --images 2000 --generations 3 --engine ort --json
  "$py" "$ref/torch_reference.py" modules --arch "$arch" --width "$width" --threads "$threads" --modules 300 --images 2000 --keep 0.5
  fi
done
