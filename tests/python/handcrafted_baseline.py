"""A simple hand-crafted-feature baseline on a `cells` table, in numpy:

per-cell intensity and area statistics of each channel → z-scored over all cells → well mean
(plate + well) → treatment median (compound + concentration) → 1-nearest-neighbour MoA by
cosine similarity with the NSC hold-out (no candidate of the query's compound) and NSCB (also
none of the query's batch; MoAs left with no candidate are dropped, as in the DeepProfiler
reference). DMSO is neither query nor candidate. It also classifies single treated cells against
the other compounds' treatment profiles, to show how little one cell says. It measures how hard a screen is for features
that know nothing: `pf-synth`'s screen must leave room for learned features to win.

    python handcrafted_baseline.py cells.parquet [--json out.json]
"""

import argparse
import json
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def cell_features(pixels):
    """(n, C, H, W) uint16 → (n, F) float features."""
    x = pixels.astype(np.float32)
    n, channels, height, width = x.shape
    flat = x.reshape(n, channels, -1)
    background = np.percentile(flat, 5, axis=2, keepdims=True)
    signal = np.maximum(flat - background, 0)
    mean = signal.mean(axis=2)
    std = signal.std(axis=2)
    p99 = np.percentile(signal, 99, axis=2)
    threshold = mean[:, :, None] + std[:, :, None]
    area = (signal > threshold).mean(axis=2)
    centre = x[:, :, height // 2 - 8 : height // 2 + 8, width // 2 - 8 : width // 2 + 8].reshape(n, channels, -1)
    centre_ratio = np.maximum(centre - background, 0).mean(axis=2) / (mean + 1.0)
    return np.concatenate([mean, std, p99, area, centre_ratio], axis=1)


def nearest_neighbour_accuracy(profiles, compounds, moas, batches, hold_out_batch):
    normalised = profiles / np.linalg.norm(profiles, axis=1, keepdims=True)
    similarity = normalised @ normalised.T
    n = len(profiles)
    admissible = compounds[:, None] != compounds[None, :]
    if hold_out_batch:
        # Batches are sets: a treatment whose wells span several weeks (taxol) shares a batch
        # with every treatment of those weeks.
        disjoint = np.array([[not (a & b) for b in batches] for a in batches])
        admissible &= disjoint
        # MoAs whose treatments have no admissible same-MoA candidate are dropped (queries and
        # candidates), as in the DeepProfiler NSCB reference.
        same_moa = moas[:, None] == moas[None, :]
        scorable_moas = {moas[i] for i in range(n) if (admissible[i] & same_moa[i]).any()}
        keep = np.array([moa in scorable_moas for moa in moas])
        admissible &= keep[None, :]
    else:
        keep = np.ones(n, dtype=bool)
    correct = []
    for i in np.where(keep)[0]:
        candidates = np.where(admissible[i])[0]
        if len(candidates) == 0:
            continue  # shares a batch with every candidate (a control spanning all weeks)
        best = candidates[np.argmax(similarity[i, candidates])]
        correct.append(moas[best] == moas[i])
    return float(np.mean(correct)), int(len(correct)), len({moas[i] for i in np.where(keep)[0]})


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cells")
    parser.add_argument("--json")
    args = parser.parse_args()

    file = pq.ParquetFile(args.cells)
    features, keys = [], []
    for batch in file.iter_batches(batch_size=4096):
        pixels = batch.column("Pixels").to_numpy_ndarray()
        features.append(cell_features(pixels))
        keys.append(batch.select(["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration",
                                  "Metadata_MoA", "Metadata_Batch"]).to_pandas())
    features = np.concatenate(features)
    keys = pd.concat(keys, ignore_index=True)
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-9)
    frame = pd.concat([keys, pd.DataFrame(features, columns=[f"f{i}" for i in range(features.shape[1])])], axis=1)
    feature_columns = [c for c in frame.columns if c.startswith("f")]
    wells = frame.groupby(["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration",
                           "Metadata_MoA", "Metadata_Batch"], as_index=False)[feature_columns].mean()
    treated = wells[wells.Metadata_Compound != "DMSO"]
    treatments = treated.groupby(["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA"], as_index=False).agg(
        {**{c: "median" for c in feature_columns}, "Metadata_Batch": lambda b: ";".join(sorted(set(b)))})
    profiles = treatments[feature_columns].to_numpy()
    compounds = treatments.Metadata_Compound.to_numpy()
    moas = treatments.Metadata_MoA.to_numpy()
    batches = [set(b.split(";")) for b in treatments.Metadata_Batch]
    nsc, n_nsc, moas_nsc = nearest_neighbour_accuracy(profiles, compounds, moas, batches, False)
    nscb, n_nscb, moas_nscb = nearest_neighbour_accuracy(profiles, compounds, moas, batches, True)
    chance = 1.0 / moas_nsc
    # Single cells against the treatment profiles of other compounds: how much a lone cell says.
    treated_cells = frame[frame.Metadata_Compound != "DMSO"].sample(n=min(3000, len(frame)), random_state=0)
    normalised_profiles = profiles / np.linalg.norm(profiles, axis=1, keepdims=True)
    cell_vectors = treated_cells[feature_columns].to_numpy()
    cell_vectors = cell_vectors / np.linalg.norm(cell_vectors, axis=1, keepdims=True)
    similarity = cell_vectors @ normalised_profiles.T
    similarity[treated_cells.Metadata_Compound.to_numpy()[:, None] == compounds[None, :]] = -np.inf
    cell_nsc = float(np.mean(moas[similarity.argmax(axis=1)] == treated_cells.Metadata_MoA.to_numpy()))
    result = {"cells": int(len(frame)), "wells": int(len(wells)), "treatments": int(len(treatments)),
              "nsc": nsc, "nsc_queries": n_nsc, "nsc_moas": moas_nsc,
              "nscb": nscb, "nscb_queries": n_nscb, "nscb_moas": moas_nscb, "chance": chance,
              "single_cell_nsc": cell_nsc}
    print(f"hand-crafted baseline: {len(frame)} cells, {len(wells)} wells, {len(treatments)} treatments")
    print(f"  NSC  1-NN accuracy {nsc:.3f} ({n_nsc} treatments, {moas_nsc} MoAs; chance {chance:.3f})")
    print(f"  NSCB 1-NN accuracy {nscb:.3f} ({n_nscb} treatments, {moas_nscb} MoAs)")
    print(f"  single cells vs other compounds' treatment profiles: {cell_nsc:.3f} "
          f"({len(treated_cells)} treated cells; a lone cell says much less than its population)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    sys.exit(main())
