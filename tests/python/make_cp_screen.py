"""A CellProfiler SQLite backend of a whole screen, scaled up from the real one.

  make_cp_screen.py BACKEND.sqlite OUT_DIR --plates N [--seed S]

Copies the real backend's 32 images (8 wells × 4 sites) and their cells, cytoplasm and nuclei onto
N plates (`P001` …), every value jittered by a little noise, and gives each plate the same map:
two DMSO wells and three compounds (two wells each), of mechanisms A, B, C, which alternate between
two compounds from plate to plate; the cells' measurements of a mechanism are shifted along a
direction of its own, so that NSC and NSCB have something to find. Writes
OUT_DIR/screen.sqlite (ExportToDatabase layout: Per_Image, Per_Cells, Per_Cytoplasm, Per_Nuclei,
primary keys on ImageNumber + object number, as CellProfiler creates them), OUT_DIR/platemap.csv and
OUT_DIR/moa.csv. Plate N holds 32·N images and about 242·N cells; N = 10 is ~40 MB, N = 100 ~400 MB.
"""

import argparse
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

# Per well position: the mechanism; the compound depends on the plate (even plates hold cmpd0,
# cmpd2, cmpd4, odd plates cmpd1, cmpd3, cmpd5), so that a mechanism's two compounds sit in
# different batches (plates) and NSCB has queries to score.
MOAS = ["DMSO", "A", "DMSO", "B", "DMSO", "C", "DMSO", "A"]


def compound(moa, plate):
    if moa == "DMSO":
        return "DMSO"
    return f"cmpd{2 * 'ABC'.index(moa) + plate % 2}"


def table_sql(connection, table):
    return connection.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backend")
    parser.add_argument("out")
    parser.add_argument("--plates", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "screen.sqlite"
    target.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{args.backend}?mode=ro", uri=True)
    image = pd.read_sql("SELECT * FROM Per_Image", source)
    compartments = {c: pd.read_sql(f"SELECT * FROM Per_{c}", source) for c in ["Cells", "Cytoplasm", "Nuclei"]}
    wells = sorted(image["Image_Metadata_Well"].unique())
    assert len(wells) == len(MOAS), wells
    moa_of = dict(zip(wells, MOAS))
    n_images = len(image)

    connection = sqlite3.connect(target)
    for table in ["Per_Image", "Per_Cells", "Per_Cytoplasm", "Per_Nuclei"]:
        connection.execute(table_sql(source, table))
    moa_direction = {}
    for plate in range(args.plates):
        name = f"P{plate + 1:03d}"
        offset = plate * n_images
        plate_image = image.copy()
        plate_image["ImageNumber"] += offset
        plate_image["Image_Metadata_Plate"] = name
        plate_image.to_sql("Per_Image", connection, if_exists="append", index=False)
        well_of = dict(zip(image["ImageNumber"], image["Image_Metadata_Well"]))
        for compartment, frame in compartments.items():
            frame = frame.copy()
            moa = frame["ImageNumber"].map(lambda number: moa_of[well_of[number]])
            frame["ImageNumber"] += offset
            features = [
                c
                for c in frame.columns
                if frame[c].dtype == float and "Number_Object_Number" not in c and "Parent_" not in c
            ]
            values = frame[features].to_numpy()
            scale = np.nanstd(values, axis=0) + 1e-9
            values = values + rng.normal(0.0, 0.05, values.shape) * scale
            for label in ["A", "B", "C"]:
                if label not in moa_direction:
                    moa_direction[label] = rng.normal(0.0, 1.0, 4096)
                rows = (moa == label).to_numpy()
                direction = moa_direction[label][: len(features)]
                values[rows] += 0.5 * direction * scale
            frame[features] = values
            frame.to_sql(f"Per_{compartment}", connection, if_exists="append", index=False)
    connection.commit()
    connection.close()
    with open(out / "platemap.csv", "w") as handle:
        handle.write("Metadata_Plate,Metadata_Well,Metadata_Compound,Metadata_Concentration\n")
        for plate in range(args.plates):
            for well in wells:
                handle.write(f"P{plate + 1:03d},{well},{compound(moa_of[well], plate)},1.0\n")
    with open(out / "moa.csv", "w") as handle:
        handle.write("compound,concentration,moa\nDMSO,1.0,DMSO\n")
        for index in range(6):
            handle.write(f"cmpd{index},1.0,{'ABC'[index // 2]}\n")
    size = target.stat().st_size / 2**20
    print(f"wrote {target} ({args.plates} plates, {args.plates * n_images} images, {size:.0f} MiB)")


if __name__ == "__main__":
    main()
