"""`make bench-scale`: how the cost of pf-preprocess, pf-embed and pf-aggregate grows with the
screen. Runs the three stages on 1x, 4x and 16x a base screen (--fields fields of 1024x1280x3
uint16 in the BBBC021 layout, written once by make_fields.py) and prints, per size and stage,
the wall time, the peak resident memory of the process and the per-field or per-cell cost, then
extrapolates each stage to the full BBBC021 screen (13,200 fields, ~500k cells) from the 16x run:
pf-preprocess per field, pf-embed and pf-aggregate per cell (these fields hold more cells than
the real ones do).

A k-times screen lists the base fields k times, each repetition as plates of their own whose
image files are hard links to the base files (no extra disk, different paths, so pf-preprocess
reads and crops every repetition as a field of its own). Repetitions are read from the page cache:
the scaling measured is compute and memory, not the disk. pf-embed runs the shipped demo CytoVAE
encoder (3x68x68 crops) exported to ONNX; pf-aggregate aggregates the embeddings to wells and
treatments. One run per size, on all cores.
"""

import argparse
import csv
import os
import subprocess
import sys

import time

from benchlib import make_fields

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BBBC021_FIELDS = 13_200
BBBC021_CELLS = 500_000  # about; the fields here hold ~130 cells, the real ones ~38
PATH_COLUMNS = ("Image_PathName_DAPI", "Image_PathName_Tubulin", "Image_PathName_Actin")
FILE_COLUMNS = ("Image_FileName_DAPI", "Image_FileName_Tubulin", "Image_FileName_Actin")
PLATE_COLUMN = "Image_Metadata_Plate_DAPI"


def repeated_screen(base_csv, copies):
    """An image table listing the base fields `copies` times, repetition r on plates `<plate>-r<r>`
    with its files hard-linked under `rep<r>/`."""
    folder = os.path.dirname(base_csv)
    with open(base_csv, newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    out_rows = []
    for r in range(copies):
        for row in rows:
            row = dict(row)
            for path_column, file_column in zip(PATH_COLUMNS, FILE_COLUMNS):
                source = os.path.join(folder, row[path_column], row[file_column])
                target_folder = os.path.join(folder, f"rep{r}", row[path_column])
                os.makedirs(target_folder, exist_ok=True)
                target = os.path.join(target_folder, row[file_column])
                if not os.path.exists(target):
                    os.link(source, target)
                row[path_column] = f"rep{r}/{row[path_column]}"
            row[PLATE_COLUMN] = f"{row[PLATE_COLUMN]}-r{r}"
            out_rows.append(row)
    path = os.path.join(folder, f"image-x{copies}.csv")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(out_rows)
    return path, len(out_rows)


def run_stage(command):
    """Runs one stage; returns (seconds, peak resident bytes) from the kernel's own accounting of
    the process (wait4's ru_maxrss), which a short run cannot slip past."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"bench-scale: {' '.join(command)} failed:\n{stderr.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss * 1024


def cells_in(path):
    import pyarrow.parquet as pq
    return pq.read_metadata(path).num_rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--fields", type=int, default=24, help="fields of the 1x screen")
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--model-card", default=os.path.join(ROOT, "models", "demo-cytovae", "model_card.json"))
    p = parser.parse_args()
    sizes = [int(size) for size in p.sizes.split(",")]
    os.makedirs(p.workdir, exist_ok=True)
    image_csv, moa_csv = make_fields(os.path.join(p.workdir, "fields"), p.fields, 7, "bench-scale")
    binary = lambda name: os.path.join(p.bin_dir, name)
    encoder = os.path.join(p.workdir, "encoder.onnx")
    subprocess.run([binary("pf-export"), "--model-card", p.model_card, "--encoder", encoder, "--decoder",
                    os.path.join(p.workdir, "decoder.onnx")], check=True, capture_output=True)
    mib = 1024 * 1024
    rows = []
    for size in sizes:
        table, n_fields = repeated_screen(image_csv, size)
        out = lambda name: os.path.join(p.workdir, f"x{size}-{name}")
        for path in (out("cells.parquet"), out("embeddings.parquet"), out("wells.parquet"), out("treatments.parquet")):
            if os.path.exists(path):
                os.remove(path)
        steps = [
            ("pf-preprocess", [binary("pf-preprocess"), "bbbc021", "--image-csv", table, "--moa-csv", moa_csv,
                               "--output", out("cells.parquet"), "--no-progress"]),
            ("pf-embed", [binary("pf-embed"), "--cells", out("cells.parquet"), "--encoder", encoder, "--output",
                          out("embeddings.parquet"), "--no-progress"]),
            ("pf-aggregate", [binary("pf-aggregate"), "--input", out("embeddings.parquet"), "--wells",
                              out("wells.parquet"), "--treatments", out("treatments.parquet")]),
        ]
        for stage, command in steps:
            seconds, peak = run_stage(command)
            if stage == "pf-preprocess":
                n_cells = cells_in(out("cells.parquet"))
            rows.append((size, n_fields, stage, seconds, peak, n_cells))
            print(f"bench-scale: {size:2d}x ({n_fields} fields, {n_cells} cells) {stage:14s} {seconds:7.2f} s "
                  f"peak {peak / mib:6.0f} MiB", file=sys.stderr, flush=True)
    print(f"bench-scale: the base screen is {p.fields} fields of 1024x1280x3 uint16; each size one run")
    print(f"  {'size':>4}  {'fields':>6}  {'cells':>7}  {'stage':14s} {'seconds':>8}  {'peak MiB':>8}  {'ms/field':>8}  {'us/cell':>7}")
    for size, n_fields, stage, seconds, peak, n_cells in rows:
        print(f"  {size:>3}x  {n_fields:6d}  {n_cells:7d}  {stage:14s} {seconds:8.2f}  {peak / mib:8.0f}  "
              f"{1000 * seconds / n_fields:8.1f}  {1e6 * seconds / n_cells:7.1f}")
    largest = max(sizes)
    print(f"  the full BBBC021 screen ({BBBC021_FIELDS:,} fields, ~{BBBC021_CELLS:,} cells), extrapolated linearly "
          f"from the {largest}x run (pf-preprocess per field, the others per cell):")
    for size, n_fields, stage, seconds, peak, n_cells in rows:
        if size == largest:
            scale = BBBC021_FIELDS / n_fields if stage == "pf-preprocess" else BBBC021_CELLS / n_cells
            total = seconds * scale
            shown = f"{total / 60:6.1f} min" if total >= 60 else f"{total:6.1f} s  "
            print(f"    {stage:14s} ~{shown}  (peak memory at {largest}x: {peak / mib:.0f} MiB)")


if __name__ == "__main__":
    main()
