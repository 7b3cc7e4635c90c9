"""Independent checks of a `cells` table written by pf-preprocess, run by the end-to-end tests:

    check_cells.py npy   --cells cells.parquet --root singlecell_tiny
        every cell's pixels equal numpy's reading of its .npy file (HWC -> CHW)
    check_cells.py tiff  --cells whole.parquet --tiffs a.tif,b.tif
        the single row's tensor equals tifffile's reading of the channel files
    check_cells.py crops --cells ours.parquet --reference ref.parquet --min-equal 0.99
        the same cells as the reference implementation, and nearly all crops identical

Every mode also checks what a pandas user sees: the tensor column is pyarrow's
FixedShapeTensorType (uint16, [C,H,W]) and the key columns have the documented dtypes.
Prints `OK: ...` and exits 0, or prints the mismatch and exits 1.
"""

import argparse
import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tifffile

EXPECTED_DTYPES = {
    "Metadata_Site": "int32",
    "Metadata_Concentration": "float64",
    "Metadata_ObjectNumber": "int32",
    "Metadata_Location_Center_X": "float64",
    "Metadata_Location_Center_Y": "float64",
}
STRING_COLUMNS = ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_MoA", "Metadata_Batch"]


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def load(path):
    table = pq.read_table(path)
    pixels_type = table.schema.field("Pixels").type
    if not isinstance(pixels_type, pa.FixedShapeTensorType):
        fail(f"{path}: Pixels is {pixels_type}, not a fixed_shape_tensor")
    if pixels_type.value_type != pa.uint16() or len(pixels_type.shape) != 3:
        fail(f"{path}: Pixels is {pixels_type}, expected uint16 [C,H,W]")
    metadata = pq.read_metadata(path).metadata
    for key in (b"phenoflow.schema", b"phenoflow.params_hash", b"phenoflow.inputs", b"phenoflow.stage_version"):
        if key not in metadata:
            fail(f"{path}: no {key!r} provenance key")
    if metadata[b"phenoflow.schema"] != b"cells":
        fail(f"{path}: schema {metadata[b'phenoflow.schema']!r}")
    frame = table.drop_columns(["Pixels"]).to_pandas()
    for column, dtype in EXPECTED_DTYPES.items():
        if str(frame[column].dtype) != dtype:
            fail(f"{path}: pandas dtype of {column} is {frame[column].dtype}, expected {dtype}")
    for column in STRING_COLUMNS:
        if not (pd.api.types.is_string_dtype(frame[column]) or frame[column].dtype == object):
            fail(f"{path}: pandas dtype of {column} is {frame[column].dtype}, expected strings")
    tensor = table.column("Pixels").combine_chunks().to_numpy_ndarray()
    if tensor.dtype != np.uint16:
        fail(f"{path}: tensor dtype {tensor.dtype}")
    return frame, tensor


def check_npy(args):
    frame, tensor = load(args.cells)
    metadata = pd.read_csv(os.path.join(args.root, "metadata.csv"))
    if len(frame) != len(metadata):
        fail(f"{len(frame)} rows, metadata.csv has {len(metadata)}")
    folder = os.path.join(args.root, "singh_cp_pipeline_singlecell_images")
    for row, (name, cell_id) in enumerate(zip(metadata.Multi_Cell_Image_Name, metadata.Single_Cell_Image_Id)):
        expected = np.load(os.path.join(folder, name, f"{name}_{cell_id}.npy")).transpose(2, 0, 1)
        if not np.array_equal(tensor[row], expected):
            fail(f"row {row}: pixels differ from {name}_{cell_id}.npy")
        if frame.Metadata_ObjectNumber[row] != cell_id + 1:
            fail(f"row {row}: ObjectNumber {frame.Metadata_ObjectNumber[row]}, expected {cell_id + 1}")
    if not (frame.Metadata_Plate == metadata.Image_Metadata_Plate_DAPI).all():
        fail("plates differ from metadata.csv")
    print(f"OK: {len(frame)} cells equal numpy's .npy pixels; dtypes as documented")


def check_tiff(args):
    frame, tensor = load(args.cells)
    expected = np.stack([tifffile.imread(path) for path in args.tiffs.split(",")]).astype(np.uint16)
    if tensor.shape != (1,) + expected.shape:
        fail(f"tensor shape {tensor.shape}, tifffile gives {expected.shape}")
    if not np.array_equal(tensor[0], expected):
        fail(f"{int((tensor[0] != expected).sum())} pixels differ from tifffile")
    print(f"OK: {expected.shape} pixels equal tifffile's")


def check_crops(args):
    frame, tensor = load(args.cells)
    reference = pq.read_table(args.reference)
    reference_tensor = reference.column("Pixels").combine_chunks().to_numpy_ndarray()
    if tensor.shape != reference_tensor.shape:
        fail(f"{tensor.shape[0]} cells, the reference has {reference_tensor.shape[0]} ({tensor.shape} vs {reference_tensor.shape})")
    equal = (tensor == reference_tensor).reshape(len(tensor), -1).all(axis=1).mean()
    if equal < args.min_equal:
        fail(f"only {equal:.4f} of the crops equal the reference's (need {args.min_equal})")
    print(f"OK: {len(tensor)} cells like the reference; {equal:.4f} of the crops identical")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["npy", "tiff", "crops"])
    parser.add_argument("--cells", required=True)
    parser.add_argument("--root")
    parser.add_argument("--tiffs")
    parser.add_argument("--reference")
    parser.add_argument("--min-equal", type=float, default=0.99)
    args = parser.parse_args()
    {"npy": check_npy, "tiff": check_tiff, "crops": check_crops}[args.mode](args)


if __name__ == "__main__":
    main()
