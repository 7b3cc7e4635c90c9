"""Reference implementation of `pf-preprocess bbbc021` with numpy, scipy, tifffile and
scikit-image, written the way a competent user would: the same detection algorithm (Gaussian
smoothing, tile-minimum background, Otsu, seeded watershed on intensity, area filter), crops
around the centroids, and a zstd Parquet table with a fixed-shape tensor column. Fields are
processed by a multiprocessing pool (all cores) and written in order, row group by row group.

Used by `make bench-preprocess` (speed and memory) and by the end-to-end tests (nucleus counts).

    python ref_preprocess.py --image-csv images.csv --images-root ROOT --output ref.parquet
"""

import argparse
import csv
import multiprocessing
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.ndimage as ndi
import tifffile
from skimage.filters import threshold_otsu
from skimage.measure import regionprops
from skimage.segmentation import watershed
from skimage.transform import resize

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
OTSU_CLIP_PERCENTILE = 99.5


def detect_nuclei(dna, p):
    """Centroids (x, y) of the nuclei in a DNA image, in label order."""
    image = dna.astype(np.float32)
    smoothed = ndi.gaussian_filter(image, p.smoothing_sigma, mode="nearest", truncate=4.0)
    if p.background_block > 0:
        block = p.background_block
        height, width = smoothed.shape
        grid_h, grid_w = -(-height // block), -(-width // block)
        padded = np.pad(smoothed, ((0, grid_h * block - height), (0, grid_w * block - width)), mode="edge")
        grid = padded.reshape(grid_h, block, grid_w, block).min(axis=(1, 3))
        grid = ndi.gaussian_filter(grid, 1.0, mode="nearest", truncate=4.0)
        background = resize(grid, (height, width), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
        foreground = np.maximum(smoothed - background, 0)
    else:
        foreground = smoothed
    if foreground.max() <= foreground.min():
        return []
    clipped = np.minimum(foreground, np.percentile(foreground, OTSU_CLIP_PERCENTILE))
    mask = foreground > threshold_otsu(clipped) * p.threshold_scale
    seed_image = ndi.gaussian_filter(image, p.declump_sigma, mode="nearest", truncate=4.0)
    peaks = mask & (seed_image >= ndi.maximum_filter(seed_image, size=2 * p.min_distance + 1, mode="nearest"))
    markers, _ = ndi.label(peaks, structure=EIGHT_CONNECTED)
    labels = watershed(-seed_image, markers, mask=mask, connectivity=2)
    unreached = mask & (labels == 0)
    if unreached.any():
        extra, _ = ndi.label(unreached, structure=EIGHT_CONNECTED)
        labels[unreached] = extra[unreached] + labels.max()
    centres = []
    for region in regionprops(labels):
        if region.area >= p.min_area and (p.max_area == 0 or region.area <= p.max_area):
            row, column = region.centroid
            centres.append((column, row))
    return centres


def crop_field(task):
    """All crops of one field as a (n, C, S, S) uint16 array, plus its metadata row."""
    paths, meta, p = task
    channels = np.stack([tifffile.imread(path) for path in paths]).astype(np.uint16)
    _, height, width = channels.shape
    half = p.crop_size // 2
    crops, numbers, centres = [], [], []
    for number, (x, y) in enumerate(detect_nuclei(channels[0], p), start=1):
        left, top = int(round(x)) - half, int(round(y)) - half
        if left < 0 or top < 0 or left + p.crop_size > width or top + p.crop_size > height:
            continue
        crops.append(channels[:, top : top + p.crop_size, left : left + p.crop_size])
        numbers.append(number)
        centres.append((x, y))
    shape = (len(crops), channels.shape[0], p.crop_size, p.crop_size)
    return (np.stack(crops) if crops else np.zeros(shape, np.uint16)), numbers, centres, meta


def read_fields(p):
    with open(p.image_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    tasks = []
    for row in rows:
        paths = [
            os.path.join(p.images_root, row[f"Image_PathName_{c}"], row[f"Image_FileName_{c}"]) for c in p.channels
        ]
        plate = row["Image_Metadata_Plate_DAPI"]
        meta = (plate, row["Image_Metadata_Well_DAPI"], row["Image_Metadata_Compound"],
                float(row["Image_Metadata_Concentration"]), plate.split("_")[0])
        tasks.append((paths, meta, p))
    return tasks


def to_table(crops, numbers, centres, meta):
    n = len(numbers)
    plate, well, compound, concentration, batch = meta
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(crops))
    return pa.table({
        "Metadata_Plate": [plate] * n,
        "Metadata_Well": [well] * n,
        "Metadata_Compound": [compound] * n,
        "Metadata_Concentration": pa.array([concentration] * n, pa.float64()),
        "Metadata_Batch": [batch] * n,
        "Metadata_ObjectNumber": pa.array(numbers, pa.int32()),
        "Metadata_Location_Center_X": pa.array([c[0] for c in centres], pa.float64()),
        "Metadata_Location_Center_Y": pa.array([c[1] for c in centres], pa.float64()),
        "Pixels": tensor,
    })


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-csv", required=True)
    parser.add_argument("--images-root", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--channels", default="DAPI,Actin,Tubulin", type=lambda s: s.split(","))
    parser.add_argument("--crop-size", type=int, default=68)
    parser.add_argument("--smoothing-sigma", type=float, default=2.0)
    parser.add_argument("--background-block", type=int, default=64)
    parser.add_argument("--threshold-scale", type=float, default=1.0)
    parser.add_argument("--declump-sigma", type=float, default=4.0)
    parser.add_argument("--min-distance", type=int, default=8)
    parser.add_argument("--min-area", type=int, default=80)
    parser.add_argument("--max-area", type=int, default=0)
    parser.add_argument("--processes", type=int, default=os.cpu_count())
    p = parser.parse_args()

    tasks = read_fields(p)
    writer = None
    pending, pending_rows, n_cells = [], 0, 0
    with multiprocessing.Pool(p.processes) as pool:
        for crops, numbers, centres, meta in pool.imap(crop_field, tasks, chunksize=1):
            if not numbers:
                continue
            pending.append(to_table(crops, numbers, centres, meta))
            pending_rows += len(numbers)
            n_cells += len(numbers)
            if pending_rows >= 2048:
                table = pa.concat_tables(pending)
                writer = writer or pq.ParquetWriter(p.output, table.schema, compression="zstd")
                writer.write_table(table)
                pending, pending_rows = [], 0
    if pending:
        table = pa.concat_tables(pending)
        writer = writer or pq.ParquetWriter(p.output, table.schema, compression="zstd")
        writer.write_table(table)
    if writer:
        writer.close()
    print(f"ref_preprocess: wrote {n_cells} cells from {len(tasks)} fields", file=sys.stderr)


if __name__ == "__main__":
    main()
