"""Writes a per-well table for every annotated well of the real BBBC021 image table: one row per
(plate, well) whose compound and concentration are in the MoA table (DMSO and the taxol positive
controls included), as a CellProfiler per-well export would hold them, with random features.

    python make_bbbc021_wells.py --image-csv BBBC021_v1_image.csv --moa-csv BBBC021_v1_moa.csv \
        --out per_well.csv [--keys-only] [--features 8] [--seed 1]

--keys-only writes plate and well only (the compound and concentration are for an annotate step).
"""

import argparse

import numpy as np
import pandas as pd


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-csv", required=True)
    parser.add_argument("--moa-csv", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--keys-only", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    p = parser.parse_args()
    images = pd.read_csv(p.image_csv)
    with open(p.moa_csv, newline="") as handle:
        moa = pd.read_csv(handle, lineterminator="\r")
    annotated = {(c, round(float(k) * 1e6)) for c, k in zip(moa.compound, moa.concentration)}
    keys = ["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI", "Image_Metadata_Compound", "Image_Metadata_Concentration"]
    wells = images[keys].drop_duplicates(["Image_Metadata_Plate_DAPI", "Image_Metadata_Well_DAPI"])
    wells = wells[[
        (c, round(float(k) * 1e6)) in annotated
        for c, k in zip(wells.Image_Metadata_Compound, wells.Image_Metadata_Concentration)
    ]].reset_index(drop=True)
    if p.keys_only:
        wells = wells[keys[:2]]
    rng = np.random.default_rng(p.seed)
    for i in range(p.features):
        wells[f"Cells_Feature_{i}"] = rng.normal(size=len(wells))
    wells.to_csv(p.out, index=False)
    print(f"{len(wells)} wells")


if __name__ == "__main__":
    main()
