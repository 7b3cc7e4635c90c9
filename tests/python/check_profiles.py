"""Independent checks of pf-aggregate and pf-classify, run by the end-to-end tests:

    check_profiles.py wells   --cells cells.parquet --wells wells.parquet
        our well profiles equal pycytominer.aggregate(strata=[plate, well], operation="mean")
        within 1e-6
    check_profiles.py nsc     --treatments treatments.parquet --metrics metrics.parquet
        NSC and NSCB accuracy recomputed with scikit-learn's NearestNeighbors (cosine) on the
        same treatment profiles equal the ones pf-classify reported
    check_profiles.py tvn     --wells raw-wells.parquet --normalized tvn-wells.parquet
        TVN with Ledoit-Wolf shrinkage recomputed with scikit-learn's LedoitWolf and numpy's eigh
        on the DMSO wells of the unnormalised table equals ours (each component up to its sign)
    check_profiles.py coral   --wells tvn-wells.parquet --normalized coral-wells.parquet
        CORAL per batch (np.cov + I, scipy's matrix square roots) applied to our TVN output equals
        ours
    check_profiles.py summary --metrics seed0.parquet --metrics seed1.parquet --summary s.parquet
        pf-classify summarize's mean, sample sd (ddof=1), min, max, replicate count and common
        count per (metric, protocol, scope) equal pandas' groupby over the replicates' rows

Prints `OK: ...` and exits 0, or prints the mismatch and exits 1.
"""

import argparse
import sys

import numpy as np
import pandas as pd
import pyarrow.parquet as pq


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def check_wells(args):
    from pycytominer import aggregate

    cells = pq.read_table(args.cells).to_pandas()
    features = [c for c in cells.columns if not c.startswith("Metadata_")]
    expected = aggregate(cells, strata=["Metadata_Plate", "Metadata_Well"], features=features, operation="mean")
    ours = pq.read_table(args.wells).to_pandas()
    merged = expected.merge(ours, on=["Metadata_Plate", "Metadata_Well"], suffixes=("_pycytominer", ""))
    if len(merged) != len(expected) or len(ours) != len(expected):
        fail(f"{len(ours)} wells, pycytominer has {len(expected)}; {len(merged)} matched")
    worst = 0.0
    for feature in features:
        difference = np.abs(merged[feature].to_numpy(float) - merged[f"{feature}_pycytominer"].to_numpy(float)).max()
        worst = max(worst, difference)
    if worst > 1e-6:
        fail(f"well profiles differ from pycytominer by up to {worst:.3g}")
    counts = cells.groupby(["Metadata_Plate", "Metadata_Well"]).size().rename("n").reset_index()
    counted = ours.merge(counts, on=["Metadata_Plate", "Metadata_Well"])
    if not (counted.Metadata_Count_Cells == counted.n).all():
        fail("Metadata_Count_Cells differs from the number of cells per well")
    print(f"OK: {len(ours)} wells x {len(features)} features equal pycytominer.aggregate (max |diff| {worst:.2g})")


def nearest_neighbour_accuracy(frame, features, hold_out_batch):
    """NSC / NSCB 1-NN with scikit-learn, written independently of pf-classify."""
    from sklearn.neighbors import NearestNeighbors

    profiles = frame[features].to_numpy(float)
    compounds = frame.Metadata_Compound.to_numpy()
    moas = frame.Metadata_MoA.to_numpy()
    batches = [set(b.split(";")) for b in frame.Metadata_Batch]
    n = len(frame)

    def admissible(i, j):
        return i != j and compounds[i] != compounds[j] and (not hold_out_batch or not (batches[i] & batches[j]))

    keep = np.ones(n, bool)
    if hold_out_batch:
        scorable = {moas[i] for i in range(n) if any(admissible(i, j) and moas[j] == moas[i] for j in range(n))}
        keep = np.array([m in scorable for m in moas])
    index = np.where(keep)[0]
    model = NearestNeighbors(n_neighbors=len(index), metric="cosine").fit(profiles[index])
    distances, neighbours = model.kneighbors(profiles[index])
    correct = scored = 0
    for row, query in enumerate(index):
        # Nearest admissible candidate; ties go to the first in (compound, concentration) order,
        # which is the table's order.
        candidates = [(round(d, 12), index[j]) for d, j in zip(distances[row], neighbours[row]) if admissible(query, index[j])]
        if not candidates:
            continue  # no admissible candidate at all: dropped, as pf-classify does
        best = min(candidates)[1]
        correct += moas[best] == moas[query]
        scored += 1
    return correct / scored, scored


def check_nsc(args):
    treatments = pq.read_table(args.treatments).to_pandas()
    treatments = treatments[treatments.Metadata_Compound != "DMSO"]
    treatments = treatments.sort_values(["Metadata_Compound", "Metadata_Concentration"]).reset_index(drop=True)
    features = [c for c in treatments.columns if not c.startswith("Metadata_")]
    metrics = pq.read_table(args.metrics).to_pandas()
    reported = metrics[(metrics.Metric == "accuracy") & (metrics.Scope == "all")].set_index("Protocol").Value
    for protocol, hold_out_batch in (("NSC", False), ("NSCB", True)):
        accuracy, n = nearest_neighbour_accuracy(treatments, features, hold_out_batch)
        if abs(accuracy - reported[protocol]) > 1e-12:
            fail(f"{protocol}: scikit-learn gives {accuracy:.6f} over {n}, pf-classify reported {reported[protocol]:.6f}")
        print(f"OK: {protocol} accuracy {accuracy:.4f} over {n} treatments, as scikit-learn computes it")


def well_matrix(path):
    frame = pq.read_table(path).to_pandas().sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    features = [c for c in frame.columns if not c.startswith("Metadata_")]
    return frame, frame[features].to_numpy(float)


def check_tvn(args):
    from sklearn.covariance import LedoitWolf

    frame, raw = well_matrix(args.wells)
    _, ours = well_matrix(args.normalized)
    controls = raw[(frame.Metadata_Compound == "DMSO").to_numpy()]
    fit = LedoitWolf().fit(controls)
    values, vectors = np.linalg.eigh(fit.covariance_)
    order = np.argsort(values)[::-1]
    expected = (raw - controls.mean(axis=0)) @ vectors[:, order] / np.sqrt(values[order])
    signs = np.sign(np.sum(expected * ours, axis=0))
    worst = np.abs(expected * signs - ours).max()
    if worst > 1e-6 * max(1.0, np.abs(expected).max()):
        fail(f"TVN differs from scikit-learn's Ledoit-Wolf whitening by up to {worst:.3g}")
    print(f"OK: TVN (Ledoit-Wolf shrinkage {fit.shrinkage_:.4f}) equals scikit-learn + numpy (max |diff| {worst:.2g})")


def check_coral(args):
    from scipy.linalg import fractional_matrix_power, sqrtm

    frame, before = well_matrix(args.wells)
    _, ours = well_matrix(args.normalized)
    dmso = (frame.Metadata_Compound == "DMSO").to_numpy()
    eye = np.eye(before.shape[1])
    target = np.real(sqrtm(np.cov(before[dmso], rowvar=False) + eye))
    expected = before.copy()
    for batch in frame.Metadata_Batch.unique():
        rows = (frame.Metadata_Batch == batch).to_numpy()
        source = np.real(fractional_matrix_power(np.cov(before[rows & dmso], rowvar=False) + eye, -0.5))
        expected[rows] = before[rows] @ source @ target
    worst = np.abs(expected - ours).max()
    if worst > 1e-6 * max(1.0, np.abs(expected).max()):
        fail(f"CORAL differs from the numpy/scipy reference by up to {worst:.3g}")
    print(f"OK: CORAL over {frame.Metadata_Batch.nunique()} batches equals numpy + scipy (max |diff| {worst:.2g})")


def check_summary(args):
    frames = [pq.read_table(path).to_pandas() for path in args.metrics]
    rows = pd.concat(frames, ignore_index=True)
    keys = ["Metric", "Protocol", "Scope"]
    grouped = rows.groupby(keys)
    expected = grouped.Value.agg(["mean", "std", "min", "max", "size"]).reset_index()
    counts = grouped.Count.agg(lambda c: c.iloc[0] if c.notna().all() and c.nunique() == 1 else np.nan)
    expected = expected.merge(counts.rename("common").reset_index(), on=keys)
    ours = pq.read_table(args.summary).to_pandas()
    merged = expected.merge(ours, on=keys)
    if len(merged) != len(expected) or len(ours) != len(expected):
        fail(f"{len(ours)} summary rows, pandas has {len(expected)}; {len(merged)} matched")
    worst = 0.0
    for theirs, mine in [("mean", "Mean"), ("min", "Min"), ("max", "Max")]:
        worst = max(worst, np.abs(merged[theirs] - merged[mine]).max())
    sd_known = merged["std"].notna()
    if (sd_known != merged.SD.notna()).any():
        fail("the SD is null where pandas has one, or the other way round")
    worst = max(worst, np.abs(merged["std"][sd_known] - merged.SD[sd_known]).max() if sd_known.any() else 0.0)
    if worst > 1e-12:
        fail(f"the summary differs from pandas by up to {worst:.3g}")
    if (merged["size"] != merged.Replicates).any():
        fail("replicate counts differ from pandas")
    same = merged.common.isna() == merged.Count.isna()
    if not same.all() or (merged.common.dropna() != merged.Count.dropna()).any():
        fail("the common Count differs from pandas")
    accuracy = merged[(merged.Metric == "accuracy") & (merged.Scope == "all")]
    shown = ", ".join(f"{r.Protocol} {100 * r.Mean:.1f} ± {100 * r.SD:.1f} %" for r in accuracy.itertuples())
    print(f"OK: {len(ours)} rows over {len(frames)} replicates equal pandas (max |diff| {worst:.2g}); {shown}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["wells", "nsc", "tvn", "coral", "summary"])
    parser.add_argument("--cells")
    parser.add_argument("--wells")
    parser.add_argument("--treatments")
    parser.add_argument("--metrics", action="append")
    parser.add_argument("--summary")
    parser.add_argument("--normalized")
    args = parser.parse_args()
    if args.mode == "nsc" and args.metrics:
        args.metrics = args.metrics[0]
    {"wells": check_wells, "nsc": check_nsc, "tvn": check_tvn, "coral": check_coral, "summary": check_summary}[args.mode](args)


if __name__ == "__main__":
    main()
