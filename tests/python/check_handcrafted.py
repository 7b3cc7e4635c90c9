"""Checks `pf-embed --handcrafted` against numpy: the Cells_Handcrafted_* columns of an embeddings
table must equal `cell_features` of handcrafted_baseline.py on the same cells (same order), within
a relative tolerance, and every Metadata_* column must come through unchanged.

    python check_handcrafted.py CELLS.parquet EMBEDDINGS.parquet
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from handcrafted_baseline import cell_features  # noqa: E402


def main():
    cells, embeddings = pq.read_table(sys.argv[1]), pq.read_table(sys.argv[2])
    expected = cell_features(cells.column("Pixels").combine_chunks().to_numpy_ndarray())
    columns = [name for name in embeddings.column_names if name.startswith("Cells_Handcrafted_")]
    ours = np.stack([embeddings.column(name).to_numpy() for name in columns], axis=1)
    if ours.shape != expected.shape:
        print(f"FAIL: {ours.shape} features, numpy gives {expected.shape}")
        return 1
    scale = np.abs(expected).max(axis=0) + 1e-6
    worst = float((np.abs(ours - expected) / scale).max())
    if worst > 1e-4:
        print(f"FAIL: hand-crafted features differ from numpy by up to {worst:.3g} of each feature's range")
        return 1
    for name in cells.column_names:
        if name.startswith("Metadata_") and not embeddings.column(name).equals(cells.column(name)):
            print(f"FAIL: {name} differs")
            return 1
    print(f"OK: {ours.shape[0]} cells x {ours.shape[1]} hand-crafted features equal numpy (max relative diff {worst:.2g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
