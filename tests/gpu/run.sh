#!/usr/bin/env bash
# The GPU check in one command: every figure of docs/gpu.md, written to $OUT (or --out).
#
#   tests/gpu/run.sh [--cpu] [--out DIR] [--work DIR] [--deadline SECONDS]
#
# Runs from the repository root (binaries in gpu-bundle/bin, made by `make gpu-bundle`) or from
# inside a copied bundle (binaries in bin/ beside this script). Needs a python3 with torch,
# pyarrow and pandas (torchvision for the ResNet-18 reference); it finds libtorch, the CUDA
# libraries and ONNX Runtime through that python3 ($PHENOFLOW_GPU_PYTHON overrides which one).
# --cpu is the dry run `make test` does: tiny data, CPU only, every step exercised.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${OUT:-gpu-check-out}
work=${TMPDIR:-/tmp}/phenoflow-gpu-check
extra=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --cpu|--deadline=*) extra+=("$1"); shift ;;
        --deadline) extra+=("$1" "$2"); shift 2 ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "${PHENOFLOW_GPU_BIN:-}" ]; then bin=$PHENOFLOW_GPU_BIN
elif [ -x "$here/bin/pf-train" ]; then bin=$here/bin
elif [ -x "$here/../../gpu-bundle/bin/pf-train" ]; then bin=$(cd "$here/../../gpu-bundle/bin" && pwd)
else echo "run.sh: no stage binaries: run 'make gpu-bundle' first (or set PHENOFLOW_GPU_BIN)" >&2; exit 2
fi
python=${PHENOFLOW_GPU_PYTHON:-python3}
command -v "$python" >/dev/null || { echo "run.sh: no $python on PATH" >&2; exit 2; }
mkdir -p "$out"
echo "run.sh: binaries $bin, python $(command -v "$python"), results in $out, scratch in $work"
exec "$python" "$here/gpu_check.py" --bin-dir "$bin" --out "$out" --work "$work" "${extra[@]}"
