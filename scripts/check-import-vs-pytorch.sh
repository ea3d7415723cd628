#!/usr/bin/env bash
# Integration check of `cnnsplitter import` against PyTorch (not in the default test suite: it
# needs PyTorch). Uses the virtual environment that ../shared/bench/setup-torch.sh makes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TORCH_REF_VENV:-${TMPDIR:-/tmp}/torch-ref-venv}"
if [ ! -x "$venv/bin/python" ]; then
    echo "no PyTorch environment at $venv: run ../shared/bench/setup-torch.sh or set TORCH_REF_VENV" >&2
    exit 2
fi
cargo build --release --quiet
"$venv/bin/python" scripts/check_import_vs_pytorch.py target/release/cnnsplitter
