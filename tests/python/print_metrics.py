"""Prints the NSC and NSCB accuracy of pf-classify metrics tables (for `make demo`): the learned
profile's, and beside it the other profiles of the same screen given as NAME=PATH (the oracle, the
hand-crafted features), each also as a share of the oracle's when an `oracle` is given.

Usage: print_metrics.py [NAME=]METRICS.parquet [NAME=METRICS.parquet ...]   (the first is `learned`
unless named)
"""

import os
import sys

import pyarrow.parquet as pq


def accuracies(path):
    metrics = pq.read_table(path).to_pandas()
    rows = metrics[(metrics.Metric == "accuracy") & (metrics.Scope == "all")]
    out = {}
    for protocol in ("NSC", "NSCB"):
        row = rows[rows.Protocol == protocol]
        if len(row):
            out[protocol] = (float(row.Value.iloc[0]), int(row.Count.iloc[0]))
    return out


def main() -> None:
    first = sys.argv[1]
    profiles = [tuple(first.split("=", 1)) if "=" in first else ("learned", first)]
    for item in sys.argv[2:]:
        name, path = item.split("=", 1)
        if os.path.exists(path):
            profiles.append((name, path))
    results = [(name, accuracies(path)) for name, path in profiles]
    oracle = dict(results).get("oracle")
    for protocol in ("NSC", "NSCB"):
        for name, result in results:
            if protocol not in result:
                continue
            value, count = result[protocol]
            share = ""
            if oracle and name != "oracle" and protocol in oracle and oracle[protocol][0] > 0:
                share = f"  ({100 * value / oracle[protocol][0]:.0f} % of the oracle)"
            label = f"{protocol} {name}:"
            print(f"{label:<20}{100 * value:5.1f} % ({round(value * count)}/{count} treatments){share}")
    print(f"metrics:            {profiles[0][1]}")


if __name__ == "__main__":
    main()
