"""Checks an embeddings table against the cells table it came from and pf-train's libtorch outputs.

Every Metadata_* column of the cells table must come through unchanged (same rows, same order,
same dtypes); the Cells_* features must equal the libtorch profile vectors (mu·spike_mean for sparse
models) within --tolerance, and the Posterior_* columns, when present, log σ and γ.

Usage: check_embeddings.py CELLS.parquet EMBEDDINGS.parquet REFERENCE.safetensors
"""

import argparse
import sys

import numpy as np
import pyarrow.parquet as pq

from check_onnx import read_safetensors


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("cells")
    parser.add_argument("embeddings")
    parser.add_argument("reference")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    cells = pq.read_table(args.cells).drop_columns(["Pixels"]).to_pandas()
    embeddings = pq.read_table(args.embeddings).to_pandas()
    metadata = [c for c in cells.columns if c.startswith("Metadata_")]
    problems = []
    if len(embeddings) != len(cells):
        problems.append(f"{len(embeddings)} rows, cells table has {len(cells)}")
    for column in metadata:
        if column not in embeddings or not embeddings[column].equals(cells[column]):
            problems.append(f"metadata column {column} differs")
    reference = read_safetensors(args.reference)
    order = reference["cell_index"]
    checks = [("Cells_", "profile"), ("Posterior_.*_logsigma", "log_sigma"), ("Posterior_.*_gamma", "gamma")]
    for pattern, name in checks:
        block = embeddings.filter(regex=f"^{pattern}").to_numpy()
        if block.shape[1] == 0:
            # The profile is what every embedding table holds; the posterior blocks only where
            # the model has them.
            if name == "profile":
                problems.append(f"no {pattern}* columns: the embeddings lack the profile block")
            continue
        if block.dtype != np.float32:
            problems.append(f"{pattern} columns are {block.dtype}, expected float32")
        difference = float(np.abs(block[order] - reference[name]).max())
        print(f"{name}: {block.shape[1]} columns, max |pf-embed - libtorch| = {difference:.3g}")
        if difference > args.tolerance:
            problems.append(f"{name} differs by {difference:.3g}")
    if problems:
        print("FAIL: " + "; ".join(problems))
        return 1
    print(f"OK: {len(embeddings)} rows, {len(metadata)} metadata columns intact")
    return 0


if __name__ == "__main__":
    sys.exit(main())
