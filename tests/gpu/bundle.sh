#!/usr/bin/env bash
# `make gpu-bundle`: what a GPU machine with PyTorch but no Rust needs for the GPU check, in one
# folder: the stage binaries the check runs (stripped), the check's scripts and the PyTorch
# reference scripts, and a manifest. Fails loudly when the folder is over the size limit (the
# device loan carries at most 64 MiB, the repository's tracked files included).
#
#   tests/gpu/bundle.sh BIN_DIR DEST [LIMIT_MIB]
set -euo pipefail
bin_dir=$1
dest=$2
limit_mib=${3:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
stages=(pf-synth pf-preprocess pf-train pf-export pf-embed)
tmp="$dest.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
mkdir -p "$tmp/bin"
for stage in "${stages[@]}"; do
    [ -x "$bin_dir/$stage" ] || { echo "gpu-bundle: $bin_dir/$stage is missing (build the stages first)" >&2; exit 1; }
    strip --strip-all -o "$tmp/bin/$stage" "$bin_dir/$stage"
done
cp "$root"/tests/gpu/{run.sh,gpu_check.py,reference.py} "$tmp/"
cp "$root"/tests/python/{bench_train.py,bench_embed.py,check_onnx.py} "$tmp/"
cp "$root/docs/gpu.md" "$tmp/README.md"
{
    echo "phenoflow GPU bundle"
    echo "commit: $(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
    for stage in "${stages[@]}"; do echo "bin/$stage: $(stat -c %s "$tmp/bin/$stage") bytes"; done
} > "$tmp/MANIFEST"
bytes=$(du -sb "$tmp" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
if [ "$bytes" -gt $((limit_mib * 1048576)) ]; then
    echo "gpu-bundle: FAILED: $mib MiB is over the $limit_mib MiB limit" >&2
    du -b "$tmp"/bin/* >&2
    exit 1
fi
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "gpu-bundle: $dest: $mib MiB (limit $limit_mib MiB)"
