#!/usr/bin/env bash
# How far the demo's learned profile gets with training budget: the demo's CytoVAE (same cells,
# settings and seed as pipelines/demo.toml) trained for 2, 5, 10 and 20 epochs (each resuming the
# last), every stage exported, every cell embedded, aggregated with TVN and scored, beside the
# hand-crafted and oracle profiles of the same run. Hours of CPU on 2 cores: run it once, in the
# background, after `make demo` (which makes the cells).
#
#   tests/demo_epochs.sh [OUT]            (make demo-epochs)
#
# Prints one line per budget and writes OUT/epochs.tsv.
set -euo pipefail
BIN=${PF_BIN:-target/release}
DEMO=${DEMO:-out/demo}
OUT=${1:-out/demo-epochs}
PYTHON=${PHENOFLOW_PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
cells=("$DEMO/cells.shard0.parquet" "$DEMO/cells.shard1.parquet")
for file in "${cells[@]}"; do
  [ -f "$file" ] || { echo "demo_epochs.sh: $file is missing: run make demo first" >&2; exit 2; }
done
score() {  # score NAME METRICS → "NSC NSCB" in %
  "$PYTHON" - "$2" <<'PY'
import sys, pyarrow.parquet as pq
m = pq.read_table(sys.argv[1]).to_pandas()
a = m[(m.Metric == "accuracy") & (m.Scope == "all")].set_index("Protocol").Value
print(f"{100 * a['NSC']:.1f}\t{100 * a['NSCB']:.1f}")
PY
}
printf "epochs\tNSC\tNSCB\ttrain_s\n" > "$OUT/epochs.tsv"
for epochs in 2 5 10 20; do
  resume=()
  [ -f "$OUT/cytovae/model_card.json" ] && resume=(--resume)
  started=$(date +%s)
  "$BIN/pf-train" generative --cells "${cells[0]}" --cells "${cells[1]}" --output "$OUT/cytovae" --batch-size 64 \
      --beta 1.0 --epochs "$epochs" --latent-dim 64 --model cytovae --seed 0 --no-progress "${resume[@]}"
  seconds=$(( $(date +%s) - started ))
  "$BIN/pf-export" --model-card "$OUT/cytovae/model_card.json" --encoder "$OUT/encoder.onnx" \
      --decoder "$OUT/decoder.onnx"
  for shard in 0 1; do
    "$BIN/pf-embed" --cells "${cells[$shard]}" --encoder "$OUT/encoder.onnx" \
        --output "$OUT/embeddings.shard$shard.parquet" --no-progress
  done
  "$BIN/pf-aggregate" --input "$OUT/embeddings.shard0.parquet" --input "$OUT/embeddings.shard1.parquet" \
      --normalize tvn --wells "$OUT/wells.parquet" --treatments "$OUT/treatments.parquet" 2>/dev/null
  "$BIN/pf-classify" --treatments "$OUT/treatments.parquet" --predictions "$OUT/predictions.parquet" \
      --metrics "$OUT/metrics-$epochs.parquet" > /dev/null
  cp "$OUT/cytovae/reconstructions.png" "$OUT/reconstructions-$epochs.png"
  line="$epochs\t$(score learned "$OUT/metrics-$epochs.parquet")\t$seconds"
  printf "$line\n" >> "$OUT/epochs.tsv"
  printf "demo_epochs.sh: $line\n"
done
for name in handcrafted oracle; do
  printf "# $name\t%s\n" "$(score $name "$DEMO/$name-metrics.parquet")" >> "$OUT/epochs.tsv"
done
cat "$OUT/epochs.tsv"
