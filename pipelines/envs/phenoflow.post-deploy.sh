#!/bin/sh
# Run by Snakemake once, inside the new conda environment of phenoflow.yaml (CONDA_PREFIX set):
# writes an activation script so that every job activated in it finds libtorch (pf-train is
# linked against it) and ONNX Runtime (pf-embed and pf-report load it from ORT_DYLIB_PATH).
set -eu
: "${CONDA_PREFIX:?phenoflow.post-deploy.sh runs inside the conda environment (CONDA_PREFIX)}"
site=$("$CONDA_PREFIX/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
torch_lib="$site/torch/lib"
if [ ! -f "$torch_lib/libtorch_cpu.so" ]; then
    echo "phenoflow.post-deploy.sh: no libtorch under $torch_lib (is torch installed?)" >&2
    exit 1
fi
ort_lib=""
for candidate in "$site"/onnxruntime/capi/libonnxruntime.so.*; do
    if [ -f "$candidate" ]; then
        ort_lib=$candidate
        break
    fi
done
if [ -z "$ort_lib" ]; then
    echo "phenoflow.post-deploy.sh: no libonnxruntime.so.* under $site/onnxruntime/capi" >&2
    exit 1
fi
mkdir -p "$CONDA_PREFIX/etc/conda/activate.d"
cat > "$CONDA_PREFIX/etc/conda/activate.d/phenoflow.sh" <<SCRIPT
# Written by phenoflow.post-deploy.sh: the libraries phenoflow's stages load.
export LD_LIBRARY_PATH="$torch_lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export ORT_DYLIB_PATH="$ort_lib"
SCRIPT
echo "phenoflow.post-deploy.sh: libtorch $torch_lib, ONNX Runtime $ort_lib"
