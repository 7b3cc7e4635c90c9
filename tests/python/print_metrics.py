"""Prints the NSC and NSCB accuracy of a pf-classify metrics table (for `make demo`).

Usage: print_metrics.py METRICS.parquet
"""

import sys

import pyarrow.parquet as pq


def main() -> None:
    metrics = pq.read_table(sys.argv[1]).to_pandas()
    accuracy = metrics[(metrics.Metric == "accuracy") & (metrics.Scope == "all")]
    for protocol in ("NSC", "NSCB"):
        row = accuracy[accuracy.Protocol == protocol]
        if len(row):
            value, count = float(row.Value.iloc[0]), int(row.Count.iloc[0])
            print(f"{protocol} accuracy:  {100 * value:5.1f} % ({round(value * count)}/{count} treatments)")
    print(f"metrics:        {sys.argv[1]}")


if __name__ == "__main__":
    main()
