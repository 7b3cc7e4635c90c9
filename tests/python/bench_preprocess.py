"""`make bench-preprocess`: pf-preprocess against the numpy + tifffile + scikit-image reference
(`ref_preprocess.py`, same algorithm, a process per core) on the same BBBC021-layout fields, in
one run. Each side runs --repeat times (default 5), interleaved, and the median times are
compared. Prints cells/s of both, the ratio, and the peak resident memory of each (summed over
the process tree), plus pf-preprocess's peak on half the fields, to show that memory does not
grow with the number of fields.
"""

import argparse
import os
import subprocess
import sys

import pyarrow.parquet as pq

from benchlib import make_fields, run_measured, run_repeated

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin", required=True, help="pf-preprocess binary")
    parser.add_argument("--n-fields", type=int, default=120)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=5)
    p = parser.parse_args()

    full = os.path.join(p.workdir, "fields")
    half = os.path.join(p.workdir, "fields-half")
    image_csv, moa_csv = make_fields(full, p.n_fields, 7)
    half_csv, half_moa = make_fields(half, max(1, p.n_fields // 2), 8)

    ours_out = os.path.join(p.workdir, "cells-pf.parquet")
    ref_out = os.path.join(p.workdir, "cells-ref.parquet")
    ours_cmd = [p.bin, "bbbc021", "--image-csv", image_csv, "--moa-csv", moa_csv, "--output", ours_out,
                "--no-progress", "--threads", str(p.threads)]
    ref_cmd = [sys.executable, os.path.join(HERE, "ref_preprocess.py"), "--image-csv", image_csv, "--images-root",
               full, "--output", ref_out, "--processes", str(p.threads)]
    half_cmd = [p.bin, "bbbc021", "--image-csv", half_csv, "--moa-csv", half_moa, "--output",
                os.path.join(p.workdir, "cells-half.parquet"), "--no-progress", "--threads", str(p.threads)]

    (ours_seconds, ours_times, ours_peak, _), (ref_seconds, ref_times, ref_peak, _) = run_repeated(
        [[ours_cmd], [ref_cmd]], p.repeat)
    _, half_peak = run_measured(half_cmd)
    ours_cells = pq.read_metadata(ours_out).num_rows
    ref_cells = pq.read_metadata(ref_out).num_rows

    mib = 1024 * 1024
    print(f"bench-preprocess: {p.n_fields} fields of 1024x1280x3 uint16, {p.threads} threads/processes")
    runs = lambda times: ", ".join(f"{t:.2f}" for t in times)
    print(f"  pf-preprocess      {ours_cells:7d} cells  {ours_seconds:7.2f} s  {ours_cells / ours_seconds:8.0f} cells/s"
          f"  peak {ours_peak / mib:6.0f} MiB  (median of {runs(ours_times)} s)")
    print(f"  numpy/skimage ref  {ref_cells:7d} cells  {ref_seconds:7.2f} s  {ref_cells / ref_seconds:8.0f} cells/s"
          f"  peak {ref_peak / mib:6.0f} MiB  (median of {runs(ref_times)} s)")
    print(f"  ratio (cells/s, pf-preprocess / reference): {(ours_cells / ours_seconds) / (ref_cells / ref_seconds):.2f}x"
          f"  (target >= 5x)")
    print(f"  pf-preprocess peak memory: {half_peak / mib:.0f} MiB on {max(1, p.n_fields // 2)} fields, "
          f"{ours_peak / mib:.0f} MiB on {p.n_fields} fields")


if __name__ == "__main__":
    main()
