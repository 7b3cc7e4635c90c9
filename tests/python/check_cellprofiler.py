"""pf-cellprofiler and the classical path against independent references.

  check_cellprofiler.py sqlite SINGLE_CELLS.parquet BACKEND.sqlite
      The merged single-cell table equals pycytominer's SingleCells.merge_single_cells on the same
      file (CytoTable's documented settings for this backend's naming): same cells, same values.
  check_cellprofiler.py wells WELLS.parquet BACKEND.sqlite
      pf-aggregate's median wells equal pycytominer's aggregate(merge_single_cells(), median), and
      SingleCells.aggregate_profiles() on Cells and Cytoplasm (its Nuclei medians take every nucleus,
      also those whose cell CellProfiler discarded: printed, not asserted).
  check_cellprofiler.py csv SINGLE_CELLS.parquet CSV_DIR
      The merged table equals a pandas merge of Image/Cells/Cytoplasm/Nuclei.csv written here.
  check_cellprofiler.py make-cytotable BACKEND.sqlite OUT.parquet
      Writes the backend as CytoTable's `cellprofiler_sqlite_pycytominer` preset names it (CytoTable
      itself needs DuckDB's sqlite_scanner extension, which DuckDB downloads at run time).
  check_cellprofiler.py same A.parquet B.parquet
      Two single_cells tables hold the same rows and columns (up to row order).
  check_cellprofiler.py inject-missing SINGLE_CELLS.parquet OUT.parquet BLOCKLIST.txt
      A copy with missing values: 12 features in 10 % of the cells (over na_cutoff), 6 in 2 %
      (under it, in cells that leave every well some values); and a blocklist of 5 features.
  check_cellprofiler.py select WELLS.parquet CELLS.parquet BLOCKLIST.txt
      pf-aggregate --feature-select blocklist,variance-threshold,correlation-threshold,drop-na-columns
      (--normalize none, median) keeps the features pycytominer keeps: drop_na_columns on the cells,
      aggregate(median), feature_select(blocklist, variance_threshold, correlation_threshold) on the
      wells; and the kept wells' values equal. (The blocklist goes first so that it cannot remove
      the one twin of a perfectly correlated group each side kept; see the swaps below.)
  check_cellprofiler.py integer-plates SINGLE_CELLS.parquet PLATEMAP.csv OUT.parquet OUT_PLATEMAP.csv
      The same cells and plate map with plates numbered 2, 10, 1, 3, … as Int64 (text order differs
      from number order), for the median's passes.
  check_cellprofiler.py to-csv SINGLE_CELLS.parquet OUT.csv
      The table as a CSV (plates such as `001` written as they are).
  check_cellprofiler.py plates WELLS.parquet EXPECTED
      The wells' plates are exactly EXPECTED (comma-separated), as text.
  check_cellprofiler.py inject-nan SINGLE_CELLS.parquet OUT.parquet
      A copy with one NaN (not null) in Cells_AreaShape_Area.
  check_cellprofiler.py platemap SINGLE_CELLS.parquet PLATEMAP.csv MOA.csv
      A plate map giving every other well DMSO and the rest a compound each, and their MoAs.

Prints the largest absolute difference of each comparison; exits 1 when one fails.
"""

import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

warnings.simplefilter("ignore")  # SingleCells is deprecated in favour of CytoTable

from ref_cellprofiler import add_views, single_cells  # noqa: E402

PREFIXES = ("Cells_", "Cytoplasm_", "Nuclei_")
# Linking columns pycytominer leaves among the features; pf-cellprofiler keeps the object numbers as
# Metadata_ columns and drops the parent links (they are not measurements).
NOT_FEATURES = {"Cytoplasm_Number_Object_Number", "Cells_Parent_Nuclei"}


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def features(frame):
    return [c for c in frame.columns if c.startswith(PREFIXES)]


def same_features(ours, expected, other):
    """Fails unless the feature columns of `ours` are exactly `expected` (sorted)."""
    found = sorted(features(ours))
    if found != expected:
        fail(
            f"feature columns differ: ours only {sorted(set(found) - set(expected))[:5]}, "
            f"{other} only {sorted(set(expected) - set(found))[:5]}"
        )


def compare(ours, ref, names, what, tolerance=1e-12):
    a = ours[names].to_numpy(dtype=float)
    b = ref[names].to_numpy(dtype=float)
    if (np.isnan(a) != np.isnan(b)).any():
        fail(f"{what}: missing values differ")
    diff = np.nanmax(np.abs(a - b)) if a.size else 0.0
    print(f"{what}: {a.shape[0]} rows × {a.shape[1]} features, max |difference| {diff:.3g}")
    if diff > tolerance:
        fail(f"{what}: max |difference| {diff} > {tolerance}")
    return diff


def check_sqlite(ours_path, backend):
    ref = single_cells(backend).merge_single_cells()
    ours = pq.read_table(ours_path).to_pandas()
    expected = sorted(set(features(ref)) - NOT_FEATURES)
    same_features(ours, expected, "pycytominer")
    if len(ours) != len(ref):
        fail(f"{len(ours)} cells, pycytominer {len(ref)}")
    ref = ref.sort_values(["Metadata_ImageNumber", "Metadata_Cells_Number_Object_Number"]).reset_index(drop=True)
    ours = ours.sort_values(["Metadata_ImageNumber", "Metadata_ObjectNumber"]).reset_index(drop=True)
    for a, b in [
        ("Metadata_ObjectNumber", "Metadata_Cells_Number_Object_Number"),
        ("Metadata_Nuclei_Number_Object_Number", "Metadata_Nuclei_Number_Object_Number"),
        ("Metadata_Plate", "Image_Metadata_Plate"),
        ("Metadata_Well", "Image_Metadata_Well"),
    ]:
        if list(ours[a].astype(str)) != list(ref[b].astype(str)):
            fail(f"{a} differs from pycytominer's {b}")
    compare(ours, ref, expected, "merged single cells vs pycytominer SingleCells.merge_single_cells")


def check_wells(wells_path, backend):
    from pycytominer import aggregate
    from pycytominer.cyto_utils.cells import SingleCells

    wells = pq.read_table(wells_path).to_pandas().sort_values(["Metadata_Plate", "Metadata_Well"])
    wells = wells.reset_index(drop=True)
    names = features(wells)
    merged = single_cells(backend).merge_single_cells()
    merged = merged.astype({name: float for name in names})
    ref = aggregate(merged, strata=["Image_Metadata_Plate", "Image_Metadata_Well"], features=names, operation="median")
    ref = ref.sort_values(["Image_Metadata_Plate", "Image_Metadata_Well"]).reset_index(drop=True)
    if list(ref["Image_Metadata_Well"]) != list(wells["Metadata_Well"]):
        fail("wells differ")
    compare(wells, ref, names, "wells vs pycytominer aggregate(merge_single_cells(), median)")

    # aggregate_profiles infers features from lower-case compartment tables keyed by TableNumber +
    # ImageNumber + ObjectNumber (its defaults): views over the backend give it exactly that.
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "views.sqlite"
        copy.write_bytes(Path(backend).read_bytes())
        add_views(copy)
        profiles = SingleCells(f"sqlite:///{copy}").aggregate_profiles()
    profiles = profiles.sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    for prefix in ["Cells_", "Cytoplasm_"]:
        compare(wells, profiles, [n for n in names if n.startswith(prefix)], f"{prefix[:-1]} wells vs aggregate_profiles")
    nuclei = [n for n in names if n.startswith("Nuclei_")]
    diff = np.nanmax(np.abs(wells[nuclei].to_numpy(float) - profiles[nuclei].to_numpy(float)))
    print(
        f"Nuclei wells vs aggregate_profiles: max |difference| {diff:.3g} (aggregate_profiles takes the median "
        f"of every nucleus, also those no cytoplasm names; not asserted)"
    )


def check_csv(ours_path, folder):
    folder = Path(folder)
    image = pd.read_csv(folder / "Image.csv")
    tables = {}
    for compartment in ["Cells", "Cytoplasm", "Nuclei"]:
        frame = pd.read_csv(folder / f"{compartment}.csv")
        keep = {"ImageNumber", "ObjectNumber"} | {c for c in frame.columns if c.startswith("Parent_")}
        tables[compartment] = frame.rename(columns={c: f"{compartment}_{c}" for c in frame.columns if c not in keep})
    merged = tables["Cytoplasm"].merge(
        tables["Cells"].drop(columns=[c for c in tables["Cells"].columns if c.startswith("Parent_")]),
        left_on=["ImageNumber", "Parent_Cells"],
        right_on=["ImageNumber", "ObjectNumber"],
        suffixes=("", "_cells"),
    )
    merged = merged.merge(
        tables["Nuclei"].drop(columns=[c for c in tables["Nuclei"].columns if c.startswith("Parent_")]),
        left_on=["ImageNumber", "Parent_Nuclei"],
        right_on=["ImageNumber", "ObjectNumber"],
        suffixes=("", "_nuclei"),
    )
    merged = merged.merge(image[["ImageNumber", "Metadata_Plate", "Metadata_Well"]], on="ImageNumber")
    merged = merged.sort_values(["ImageNumber", "Parent_Cells"]).reset_index(drop=True)
    ours = pq.read_table(ours_path).to_pandas()
    ours = ours.sort_values(["Metadata_ImageNumber", "Metadata_ObjectNumber"]).reset_index(drop=True)
    expected = sorted(c for c in features(merged) if not c.endswith("_Number_Object_Number"))
    same_features(ours, expected, "reference")
    if len(ours) != len(merged):
        fail(f"{len(ours)} cells, the pandas merge {len(merged)}")
    if list(ours["Metadata_Plate"].astype(str)) != list(merged["Metadata_Plate"].astype(str)):
        fail("plates differ")
    counts = {p: sum(c.startswith(p) for c in features(ours)) for p in PREFIXES}
    print(f"CSV: {len(ours)} cells, features per compartment {counts}")
    compare(ours, merged, expected, "merged CSV cells vs a pandas merge of the CSVs")


def make_cytotable(backend, out):
    connection = sqlite3.connect(f"file:{backend}?mode=ro", uri=True)
    image = pd.read_sql(
        "SELECT ImageNumber AS Metadata_ImageNumber, Image_Metadata_Well, Image_Metadata_Plate FROM Per_Image",
        connection,
    )
    renames = {
        "ImageNumber": "Metadata_ImageNumber",
        "Cytoplasm_Parent_Cells": "Metadata_Cytoplasm_Parent_Cells",
        "Cytoplasm_Parent_Nuclei": "Metadata_Cytoplasm_Parent_Nuclei",
        "Cells_Number_Object_Number": "Metadata_Cells_Number_Object_Number",
        "Nuclei_Number_Object_Number": "Metadata_Nuclei_Number_Object_Number",
    }
    tables = {
        c: pd.read_sql(f"SELECT * FROM Per_{c}", connection).rename(columns=renames)
        for c in ["Cytoplasm", "Cells", "Nuclei"]
    }
    joined = image.merge(tables["Cytoplasm"], on="Metadata_ImageNumber", how="left")
    joined = joined.merge(
        tables["Cells"],
        left_on=["Metadata_ImageNumber", "Metadata_Cytoplasm_Parent_Cells"],
        right_on=["Metadata_ImageNumber", "Metadata_Cells_Number_Object_Number"],
        how="left",
    )
    joined = joined.merge(
        tables["Nuclei"],
        left_on=["Metadata_ImageNumber", "Metadata_Cytoplasm_Parent_Nuclei"],
        right_on=["Metadata_ImageNumber", "Metadata_Nuclei_Number_Object_Number"],
        how="left",
    )
    pq.write_table(pa.Table.from_pandas(joined, preserve_index=False), out)
    print(f"wrote {out}: {len(joined)} rows, {joined.shape[1]} columns")


def check_same(a_path, b_path):
    a = pq.read_table(a_path).to_pandas()
    b = pq.read_table(b_path).to_pandas()
    keys = ["Metadata_ImageNumber", "Metadata_ObjectNumber"]
    a = a.sort_values(keys).reset_index(drop=True)
    b = b.sort_values(keys).reset_index(drop=True)
    same_features(a, sorted(features(b)), Path(b_path).name)
    for key in keys + ["Metadata_Plate", "Metadata_Well", "Metadata_Nuclei_Number_Object_Number"]:
        if list(a[key].astype(str)) != list(b[key].astype(str)):
            fail(f"{key} differs")
    compare(a, b, sorted(features(a)), f"{Path(a_path).name} vs {Path(b_path).name}", tolerance=0.0)


def make_platemap(cells_path, platemap, moa):
    cells = pq.read_table(cells_path, columns=["Metadata_Plate", "Metadata_Well"]).to_pandas()
    wells = sorted(set(zip(cells["Metadata_Plate"], cells["Metadata_Well"])))
    with open(platemap, "w") as out:
        out.write("Metadata_Plate,Metadata_Well,Metadata_Compound,Metadata_Concentration\n")
        for index, (plate, well) in enumerate(wells):
            out.write(f"{plate},{well},{'DMSO' if index % 2 == 0 else f'cmpd{index}'},1.0\n")
    with open(moa, "w") as out:
        out.write("compound,concentration,moa\nDMSO,1.0,DMSO\n")
        for index in range(1, len(wells), 2):
            out.write(f"cmpd{index},1.0,{'A' if index % 4 == 1 else 'B'}\n")


def inject_missing(cells_path, out, blocklist):
    table = pq.read_table(cells_path)
    frame = table.to_pandas()
    names = features(frame)
    rng = np.random.default_rng(7)
    many = names[10:22]
    few = names[40:46]
    for name in many:
        rows = rng.choice(len(frame), size=len(frame) // 10, replace=False)
        frame.loc[rows, name] = np.nan
    # Under the cutoff, and never a whole well: the first cell of every well keeps its values.
    first = frame.groupby(["Metadata_Plate", "Metadata_Well"]).head(1).index
    candidates = np.setdiff1d(np.arange(len(frame)), first)
    for name in few:
        rows = rng.choice(candidates, size=max(1, len(frame) // 50), replace=False)
        frame.loc[rows, name] = np.nan
    schema = table.schema
    pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), out)
    Path(blocklist).write_text("blocklist\n" + "\n".join(names[100:105]) + "\nNuclei_Granularity_16_RNA\n")
    print(f"wrote {out}: 12 features 10 % missing, 6 features 2 % missing")


def check_select(wells_path, cells_path, blocklist):
    from pycytominer import aggregate, feature_select
    from pycytominer.operations import get_na_columns

    cells = pq.read_table(cells_path).to_pandas()
    names = features(cells)
    dropped_na = get_na_columns(cells, features=names, cutoff=0.05)
    kept = [n for n in names if n not in dropped_na]
    wells_ref = aggregate(cells, strata=["Metadata_Plate", "Metadata_Well"], features=kept, operation="median")
    block = [line.strip() for line in Path(blocklist).read_text().splitlines()[1:] if line.strip()]
    selected = feature_select(
        wells_ref,
        features=kept,
        operation=["blocklist", "variance_threshold", "correlation_threshold"],
        blocklist=block,
    )
    ref_kept = features(selected)
    wells = pq.read_table(wells_path).to_pandas().sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    ours_kept = features(wells)
    print(
        f"feature selection: {len(names)} features; pycytominer keeps {len(ref_kept)} "
        f"(drop_na_columns dropped {len(dropped_na)}), pf-aggregate keeps {len(ours_kept)}"
    )
    # Of perfectly correlated features (equal summed correlations), pycytominer keeps whichever
    # rounding noise and pandas' unstable sort put first; pf-aggregate keeps the earlier one. Such
    # swaps are fine; anything else is not.
    ours_only = [n for n in ours_kept if n not in ref_kept]
    ref_only = [n for n in ref_kept if n not in ours_kept]
    values = wells_ref.sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    swaps = 0
    for name in list(ours_only):
        twin = next(
            (other for other in ref_only if np.corrcoef(values[name], values[other])[0, 1] > 1 - 1e-9),
            None,
        )
        if twin is not None:
            ours_only.remove(name)
            ref_only.remove(twin)
            swaps += 1
    print(f"feature selection: {swaps} swap(s) between perfectly correlated twins")
    if ours_only or ref_only:
        fail(
            f"kept features differ: ours only {ours_only[:5]}, pycytominer only {ref_only[:5]}"
        )
    selected = selected.sort_values(["Metadata_Plate", "Metadata_Well"]).reset_index(drop=True)
    common = [n for n in ours_kept if n in ref_kept]
    compare(wells, selected, common, "selected wells vs pycytominer feature_select")


def integer_plates(cells_path, platemap, out, out_platemap):
    table = pq.read_table(cells_path)
    plates = sorted(set(table.column("Metadata_Plate").to_pylist()))
    numbers = {plate: [2, 10, 1, 3, 20, 4][index % 6] + 100 * (index // 6) for index, plate in enumerate(plates)}
    index = table.schema.get_field_index("Metadata_Plate")
    column = pa.array([numbers[p] for p in table.column(index).to_pylist()], pa.int64())
    table = table.set_column(index, pa.field("Metadata_Plate", pa.int64(), nullable=False), column)
    pq.write_table(table.replace_schema_metadata(None), out)
    frame = pd.read_csv(platemap, dtype=str)
    frame["Metadata_Plate"] = frame["Metadata_Plate"].map(lambda p: str(numbers[p]))
    frame.to_csv(out_platemap, index=False)


def inject_nan(cells_path, out):
    table = pq.read_table(cells_path)
    index = table.schema.get_field_index("Cells_AreaShape_Area")
    values = table.column(index).to_numpy().copy()
    values[0] = np.nan
    table = table.set_column(index, table.schema.field(index), pa.array(values, from_pandas=False))
    pq.write_table(table, out)


def to_csv(cells_path, out):
    pq.read_table(cells_path).to_pandas().to_csv(out, index=False)


def plates(wells_path, expected):
    found = sorted(set(pq.read_table(wells_path).column("Metadata_Plate").to_pylist()))
    if found != sorted(expected.split(",")):
        fail(f"plates {found}, expected {expected}")
    print(f"plates: {found}")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {
        "sqlite": check_sqlite,
        "wells": check_wells,
        "csv": check_csv,
        "make-cytotable": make_cytotable,
        "same": check_same,
        "platemap": make_platemap,
        "inject-missing": inject_missing,
        "integer-plates": integer_plates,
        "inject-nan": inject_nan,
        "to-csv": to_csv,
        "plates": plates,
        "select": check_select,
    }[command](*args)
