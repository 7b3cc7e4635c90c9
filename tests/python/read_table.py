"""Prints the given columns of a Parquet table, tab-separated, one row per line (for tests that
compare a table's content without depending on a Rust Parquet reader).

Usage: read_table.py TABLE.parquet COLUMN[,COLUMN...]
"""

import sys

import pyarrow.parquet as pq


def main() -> None:
    path, columns = sys.argv[1], sys.argv[2].split(",")
    table = pq.read_table(path, columns=columns).to_pydict()
    for row in zip(*(table[name] for name in columns)):
        print("\t".join(repr(value) if isinstance(value, float) else str(value) for value in row))


if __name__ == "__main__":
    main()
