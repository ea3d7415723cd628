#!/usr/bin/env bash
# The standard families (resnet18, mobilenetv2, vgg16-bn; CIFAR variants, random weights) in
# cnnsplitter (ONNX Runtime and burn) and PyTorch (eager, channels_last), in one run, 2 threads:
#   - inference images/s of the full networks (`bench infer`, torchvision's networks in PyTorch);
#   - module-images/s of decoded random sub-networks keeping about half of every group's kernels
#     (`bench modules`; PyTorch runs the very same modules, saved with --save-modules, through
#     scripts/description_torch.py, after checking them against ONNX Runtime on our export).
# Needs the PyTorch environment of ../shared/bench/setup-torch.sh and, for the ort engine,
# ORT_DYLIB_PATH. Prints one JSON line per measurement. MODES="infer modules" (default both).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TORCH_REF_VENV:-${TMPDIR:-/tmp}/torch-ref-venv}"
threads=${THREADS:-2}
modes=${MODES:-infer modules}
modules=${MODULES:-8}
images=${IMAGES:-500}
if [ ! -x "$venv/bin/python" ]; then
    echo "no PyTorch environment at $venv: run ../shared/bench/setup-torch.sh or set TORCH_REF_VENV" >&2
    exit 2
fi
cargo build --release --quiet
bin=target/release/cnnsplitter
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for mode in $modes; do
    case $mode in
    infer)
        for arch in resnet18 mobilenetv2 vgg16-bn; do
            for engine in ort burn; do
                $bin --threads "$threads" bench infer --arch "$arch" --engine "$engine" --batch 256 --iters 3 --json
            done
        done
        (cd scripts && "$venv/bin/python" bench_families_torch.py --threads "$threads" --iters 3)
        ;;
    modules)
        for arch in resnet18 mobilenetv2 vgg16-bn; do
            dir="$work/$arch"
            $bin --threads "$threads" bench modules --arch "$arch" --engine ort --modules "$modules" \
                --images "$images" --iters 4 --json --save-modules "$dir"
            $bin --threads "$threads" bench modules --arch "$arch" --engine burn --modules "$modules" \
                --images "$images" --iters 4 --json
            $bin --threads "$threads" export "$dir/module_000" --onnx "$work/$arch.onnx" >/dev/null
            (cd scripts && "$venv/bin/python" bench_modules_torch.py "$dir" --images "$images" --iters 4 \
                --threads "$threads" --check-onnx "$work/$arch.onnx")
        done
        ;;
    *)
        echo "unknown mode $mode (infer, modules)" >&2
        exit 2
        ;;
    esac
done
