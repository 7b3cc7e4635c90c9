"""The pycytominer reference of `make bench-cellprofiler`, as a user of it writes it.

  ref_cellprofiler.py aggregate-profiles VIEWS.sqlite OUT.csv
      SingleCells(...).aggregate_profiles(): per-well medians, each compartment aggregated on its
      own, the database read one well at a time (pycytominer's default n_aggregation_memory_strata).
  ref_cellprofiler.py merge-aggregate BACKEND.sqlite OUT.csv
      SingleCells(...).merge_single_cells() (every compartment loaded whole, then joined) and
      aggregate(median) per well: the single-cell table and its wells, what pf-cellprofiler +
      pf-aggregate produce.
"""

import sqlite3
import sys
import warnings

warnings.simplefilter("ignore")

from pycytominer import aggregate  # noqa: E402
from pycytominer.cyto_utils.cells import SingleCells  # noqa: E402

LINKS = {
    "Per_Cytoplasm": {"Per_Cells": "Cytoplasm_Parent_Cells", "Per_Nuclei": "Cytoplasm_Parent_Nuclei"},
    "Per_Cells": {"Per_Cytoplasm": "Cells_Number_Object_Number"},
    "Per_Nuclei": {"Per_Cytoplasm": "Nuclei_Number_Object_Number"},
}


def single_cells(backend):
    """SingleCells over an ExportToDatabase backend, with CytoTable's documented settings for its
    `Per_` tables and prefixed linking columns."""
    return SingleCells(
        f"sqlite:///{backend}",
        compartments=["Per_Cells", "Per_Cytoplasm", "Per_Nuclei"],
        compartment_linking_cols=LINKS,
        image_table_name="Per_Image",
        strata=["Image_Metadata_Plate", "Image_Metadata_Well"],
        merge_cols=["ImageNumber"],
        image_cols="ImageNumber",
    )


def add_views(path):
    """aggregate_profiles infers features from lower-case compartment tables keyed by TableNumber +
    ImageNumber + ObjectNumber (its defaults): views give it that over the Per_ tables."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE VIEW IF NOT EXISTS image AS SELECT 0 AS TableNumber, ImageNumber, Image_Metadata_Plate AS "
        "Metadata_Plate, Image_Metadata_Well AS Metadata_Well, Image_Metadata_Site AS Metadata_Site FROM Per_Image"
    )
    for compartment in ["Cells", "Cytoplasm", "Nuclei"]:
        connection.execute(
            f"CREATE VIEW IF NOT EXISTS {compartment.lower()} AS SELECT 0 AS TableNumber, "
            f"{compartment}_Number_Object_Number AS ObjectNumber, * FROM Per_{compartment}"
        )
    connection.commit()
    connection.close()


def main(mode, backend, out):
    if mode == "aggregate-profiles":
        # Views named as pycytominer's defaults expect (bench_cellprofiler.py adds them: add_views).
        SingleCells(f"sqlite:///{backend}").aggregate_profiles().to_csv(out, index=False)
    else:
        cells = single_cells(backend).merge_single_cells()
        features = [c for c in cells.columns if c.startswith(("Cells_", "Cytoplasm_", "Nuclei_"))]
        cells = cells.astype({name: float for name in features})
        wells = aggregate(cells, strata=["Image_Metadata_Plate", "Image_Metadata_Well"], features=features, operation="median")
        wells.to_csv(out, index=False)


if __name__ == "__main__":
    main(*sys.argv[1:])
