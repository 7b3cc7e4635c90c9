"""`make bench-cellprofiler`: CellProfiler single cells to per-well profiles, ours against
pycytominer, on SQLite backends scaled up from the real one (make_cp_screen.py: 32 images and
~242 cells per plate copy), at each --sizes (plates; 10 ≈ 37 MiB, 100 ≈ 370 MiB).

  ours                pf-cellprofiler (merge, image by image) + pf-aggregate (median wells)
  pycytominer         SingleCells.aggregate_profiles() (per compartment, one well at a time)
  pycytominer merge   SingleCells.merge_single_cells() + aggregate(median) (whole tables in memory)

One run each per size; wall time and the peak resident memory of the process tree. Prints a table
and the ratios.
"""

import argparse
import os
import sys

from benchlib import run_measured
from ref_cellprofiler import add_views

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--sizes", default="10,100")
    parser.add_argument(
        "--merge-up-to",
        type=int,
        default=100,
        help="run the merge_single_cells reference up to this many plates (it loads the database whole)",
    )
    args = parser.parse_args()
    python = sys.executable
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        folder = os.path.join(args.workdir, f"screen-{size}")
        screen = os.path.join(folder, "screen.sqlite")
        if not os.path.exists(screen):
            run_measured([python, os.path.join(HERE, "make_cp_screen.py"), args.backend, folder, "--plates", str(size)])
            add_views(screen)
        mib = os.path.getsize(screen) / 2**20
        cells = os.path.join(folder, "single_cells.parquet")
        ours = [
            [os.path.join(args.bin_dir, "pf-cellprofiler"), "--sqlite", screen, "--output", cells, "--no-progress"],
            [
                os.path.join(args.bin_dir, "pf-aggregate"),
                "--input", cells,
                "--cell-aggregation", "median",
                "--platemap", os.path.join(folder, "platemap.csv"),
                "--moa-csv", os.path.join(folder, "moa.csv"),
                "--wells", os.path.join(folder, "wells.parquet"),
                "--treatments", os.path.join(folder, "treatments.parquet"),
            ],
        ]
        seconds, peak = 0.0, 0
        for command in ours:
            elapsed, resident = run_measured(command)
            seconds += elapsed
            peak = max(peak, resident)
        reference = os.path.join(HERE, "ref_cellprofiler.py")
        profiles = run_measured([python, reference, "aggregate-profiles", screen, os.path.join(folder, "ref-profiles.csv")])
        if size <= args.merge_up_to:
            merged = run_measured([python, reference, "merge-aggregate", screen, os.path.join(folder, "ref-merged.csv")])
        else:
            # It holds every compartment whole in pandas (1.8 GiB at 100 plates): ~18 GiB here.
            merged = None
        rows.append((size, mib, (seconds, peak), profiles, merged))
        print(
            f"{size:>4} plates ({mib:.0f} MiB): ours {seconds:.1f} s / {peak / 2**20:.0f} MiB; "
            f"aggregate_profiles {profiles[0]:.1f} s / {profiles[1] / 2**20:.0f} MiB; "
            + (
                f"merge_single_cells+aggregate {merged[0]:.1f} s / {merged[1] / 2**20:.0f} MiB"
                if merged
                else "merge_single_cells skipped (it loads the database whole)"
            ),
            flush=True,
        )
    print("\n| plates | SQLite | ours: time, peak RSS | pycytominer aggregate_profiles | pycytominer merge_single_cells + aggregate |")
    print("|---|---|---|---|---|")
    for size, mib, ours, profiles, merged in rows:
        cell = lambda m: f"{m[0]:.1f} s, {m[1] / 2**20:.0f} MiB"  # noqa: E731
        merged_cell = f"{cell(merged)} ({merged[0] / ours[0]:.1f}× ours)" if merged else "not run (loads it whole)"
        print(
            f"| {size} | {mib:.0f} MiB | {cell(ours)} | {cell(profiles)} ({profiles[0] / ours[0]:.1f}× ours) | "
            f"{merged_cell} |"
        )


if __name__ == "__main__":
    main()
