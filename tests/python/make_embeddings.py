"""Writes a synthetic single-cell profile table (the columns of phenoflow's `embeddings` table)
with MoA structure: each MoA has a centroid, each compound its own offset, each batch (week) an
offset shared by all its treatments, each cell noise. Compounds sit in one batch each; every plate
has DMSO wells. Written with pyarrow (no phenoflow provenance), zstd.

    python make_embeddings.py --out cells.parquet --cells 500000 --features 256 --seed 1
"""

import argparse

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--moas", type=int, default=6)
    parser.add_argument("--compounds-per-moa", type=int, default=3)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--nan-at", type=int, default=-1, help="put a NaN in this row's first feature")
    parser.add_argument("--drop-column", action="append", default=[], help="leave this column out")
    parser.add_argument("--cellprofiler-wells-csv", help="also write well means as a CellProfiler-style CSV")
    parser.add_argument("--moa-csv", help="also write the MoA table (compound,concentration,moa; CR line endings)")
    parser.add_argument("--shuffle", action="store_true", help="cells in random order, not well by well")
    parser.add_argument("--row-group-size", type=int, default=65536)
    parser.add_argument("--plain-keys", action="store_true", help="metadata columns without a dictionary")
    parser.add_argument("--duplicate-row", type=int, default=-1, help="list this row (after --shuffle) twice: "
                        "once in place, once at the end")
    parser.add_argument("--seed", type=int, default=1)
    p = parser.parse_args()
    rng = np.random.default_rng(p.seed)

    moa_centroids = rng.normal(0, 1.0, (p.moas, p.features))
    batch_offsets = rng.normal(0, 0.5, (p.batches, p.features))
    treatments = []  # (compound, concentration, moa, batch, centre)
    for m in range(p.moas):
        for c in range(p.compounds_per_moa):
            compound = f"cmpd-{m}-{c}"
            batch = (m * p.compounds_per_moa + c) % p.batches
            offset = rng.normal(0, 0.6, p.features)
            for k, concentration in enumerate((0.1, 1.0, 10.0)):
                strength = (k + 1) / 3
                treatments.append((compound, concentration, f"MoA {m}", batch,
                                   strength * moa_centroids[m] + 0.5 * offset + batch_offsets[batch]))
    wells = []  # (plate, well, treatment index or -1 for DMSO)
    for b in range(p.batches):
        plates = [f"Week{b + 1}_{1000 + b * 10 + r}" for r in range(3)]
        for r, plate in enumerate(plates):
            well_number = 0
            for t, treatment in enumerate(treatments):
                if treatment[3] == b:
                    wells.append((plate, f"{'BCDEFG'[well_number // 10]}{well_number % 10 + 2:02d}", t))
                    well_number += 1
            for d in range(4):
                wells.append((plate, f"{'BCDEFG'[well_number // 10]}{well_number % 10 + 2:02d}", -1))
                well_number += 1
    cells_per_well = max(1, p.cells // len(wells))
    n = cells_per_well * len(wells)
    well_index = np.repeat(np.arange(len(wells)), cells_per_well)
    centres = np.stack([treatments[w[2]][4] if w[2] >= 0 else batch_offsets[int(w[0][4:].split("_")[0]) - 1]
                        for w in wells])
    features = (centres[well_index] + rng.normal(0, 1.5, (n, p.features))).astype(np.float32)
    if 0 <= p.nan_at < n:
        features[p.nan_at, 0] = np.nan

    def per_cell(values):
        return np.asarray(values, dtype=object)[well_index]

    plate = per_cell([w[0] for w in wells])
    columns = {
        "Metadata_Plate": pa.array(plate.tolist(), pa.string()),
        "Metadata_Well": pa.array(per_cell([w[1] for w in wells]).tolist(), pa.string()),
        "Metadata_Site": pa.array(np.ones(n, np.int32)),
        "Metadata_Compound": pa.array(per_cell([treatments[w[2]][0] if w[2] >= 0 else "DMSO" for w in wells]).tolist()),
        "Metadata_Concentration": pa.array(per_cell([treatments[w[2]][1] if w[2] >= 0 else 0.0 for w in wells]).astype(float)),
        "Metadata_MoA": pa.array(per_cell([treatments[w[2]][2] if w[2] >= 0 else "DMSO" for w in wells]).tolist()),
        "Metadata_Batch": pa.array([p_.split("_")[0] for p_ in plate.tolist()]),
        "Metadata_ObjectNumber": pa.array(np.tile(np.arange(1, cells_per_well + 1, dtype=np.int32), len(wells))),
    }
    for f in range(p.features):
        columns[f"Cells_Synthetic_z{f:03d}"] = pa.array(features[:, f])
    table = pa.table(columns).drop_columns(p.drop_column)
    if p.shuffle:
        table = table.take(rng.permutation(n))
    if 0 <= p.duplicate_row < n:
        table = pa.concat_tables([table, table.slice(p.duplicate_row, 1)])
    # Written as pf-embed writes its tables (schemas/src/parquet_io.rs): keys with a dictionary
    # and zstd level 1, float features PLAIN and uncompressed, row groups of 65,536 rows.
    keys = [c for c in table.column_names if c.startswith("Metadata_")]
    pq.write_table(table, p.out, row_group_size=p.row_group_size, use_dictionary=[] if p.plain_keys else keys,
                   compression={c: ("zstd" if c in keys else "none") for c in table.column_names},
                   compression_level={c: 1 for c in keys})
    if p.cellprofiler_wells_csv:
        frame = pa.table(columns).to_pandas()
        feature_names = [c for c in frame.columns if c.startswith("Cells_")]
        wells = frame.groupby(["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration"],
                              as_index=False)[feature_names].mean()
        wells.columns = ["Image_Metadata_Plate", "Image_Metadata_Well", "Image_Metadata_Compound",
                         "Image_Metadata_Concentration"] + [f"Cells_AreaShape_{i}" for i in range(len(feature_names))]
        wells.insert(0, "ImageNumber", range(1, len(wells) + 1))
        wells.to_csv(p.cellprofiler_wells_csv, index=False)
    if p.moa_csv:
        rows = ["compound,concentration,moa", "DMSO,0,DMSO"] + [f"{t[0]},{t[1]:g},{t[2]}" for t in treatments]
        with open(p.moa_csv, "w", newline="") as handle:
            handle.write("\r".join(rows))


if __name__ == "__main__":
    main()
