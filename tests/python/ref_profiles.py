"""Reference for `make bench-profiles`: what a competent pycytominer user writes to get from a
single-cell table to NSC accuracy — pandas reads the Parquet table, `pycytominer.aggregate`
makes well means, pandas takes treatment medians, scikit-learn's NearestNeighbors (cosine) does
the NSC 1-NN. Prints the NSC accuracy.

    python ref_profiles.py cells.parquet treatments-ref.parquet
"""

import sys

import numpy as np
import pandas as pd
from pycytominer import aggregate
from sklearn.neighbors import NearestNeighbors


def main():
    cells_path, output = sys.argv[1], sys.argv[2]
    cells = pd.read_parquet(cells_path)
    strata = ["Metadata_Plate", "Metadata_Well"]
    features = [c for c in cells.columns if not c.startswith("Metadata_")]
    wells = aggregate(cells, strata=strata, features=features, operation="mean")
    keys = cells.groupby(strata, as_index=False)[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"]].first()
    wells = wells.merge(keys, on=strata)
    del cells
    treated = wells[wells.Metadata_Compound != "DMSO"]
    treatments = treated.groupby(["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"], as_index=False)[features].median()
    treatments.to_parquet(output)
    profiles = treatments[features].to_numpy()
    compounds = treatments.Metadata_Compound.to_numpy()
    moas = treatments.Metadata_MoA.to_numpy()
    model = NearestNeighbors(n_neighbors=len(treatments), metric="cosine").fit(profiles)
    _, neighbours = model.kneighbors(profiles)
    correct = []
    for query, ranked in enumerate(neighbours):
        best = next(j for j in ranked if compounds[j] != compounds[query])
        correct.append(moas[best] == moas[query])
    print(f"reference NSC accuracy {np.mean(correct):.4f} over {len(correct)} treatments")


if __name__ == "__main__":
    main()
