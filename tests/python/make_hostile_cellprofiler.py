"""Damaged copies of the real CellProfiler exports, for the hostile-input catalogue.

  make_hostile_cellprofiler.py CSV_DIR BACKEND.sqlite OUT_DIR

writes under OUT_DIR one folder per CSV case (the four CSVs, one of them damaged) and one SQLite
file per backend case:

  csv-no-imagenumber/     Cells.csv without its ImageNumber column
  csv-dangling-parent/    Cytoplasm.csv: object 5's Parent_Cells names cell 999
  csv-no-metadata/        Image.csv: the image's Metadata_Well is empty
  csv-short-cytoplasm/    Cytoplasm.csv lost its last row (108 objects, its siblings 109)
  csv-text-feature/       Nuclei.csv: one AreaShape_Area value is `n/a`
  csv-unsorted/           Nuclei.csv: a row of image 2 before the rows of image 1
  truncated.sqlite        the first half of the backend's bytes
  no-imagenumber.sqlite   Per_Nuclei's ImageNumber column renamed
  dangling-parent.sqlite  a cytoplasm names nucleus 999
  no-metadata.sqlite      image 2's Image_Metadata_Well is NULL
  tablenumber.sqlite      a TableNumber column (several runs merged by cytominer-database)
  view.sqlite             Per_Nuclei is a view whose recursive query never ends
  generated.sqlite        Per_Cells has a generated column (zeroblob of 900 MB a row)
"""

import csv
import shutil
import sqlite3
import sys
from pathlib import Path

csv.field_size_limit(1 << 30)


def read(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def write(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def csv_case(source, out, name, damage):
    folder = out / name
    folder.mkdir(parents=True)
    for table in ["Image", "Cells", "Cytoplasm", "Nuclei"]:
        shutil.copy(source / f"{table}.csv", folder / f"{table}.csv")
    damage(folder)


def drop_column(folder, table, column):
    header, rows = read(folder / f"{table}.csv")
    index = header.index(column)
    write(folder / f"{table}.csv", header[:index] + header[index + 1 :], [r[:index] + r[index + 1 :] for r in rows])


def set_value(folder, table, row, column, value):
    header, rows = read(folder / f"{table}.csv")
    rows[row][header.index(column)] = value
    write(folder / f"{table}.csv", header, rows)


def drop_last_row(folder, table):
    header, rows = read(folder / f"{table}.csv")
    write(folder / f"{table}.csv", header, rows[:-1])


def unsorted(folder, table):
    header, rows = read(folder / f"{table}.csv")
    moved = list(rows[0])
    moved[header.index("ImageNumber")] = "2"
    write(folder / f"{table}.csv", header, [moved] + rows)


def sqlite_case(backend, out, name, statements):
    path = out / name
    shutil.copy(backend, path)
    connection = sqlite3.connect(path)
    for statement in statements:
        connection.execute(statement)
    connection.commit()
    connection.close()


def main(csv_dir, backend, out):
    source, out = Path(csv_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_case(source, out, "csv-no-imagenumber", lambda f: drop_column(f, "Cells", "ImageNumber"))
    csv_case(source, out, "csv-dangling-parent", lambda f: set_value(f, "Cytoplasm", 4, "Parent_Cells", "999"))
    csv_case(source, out, "csv-no-metadata", lambda f: set_value(f, "Image", 0, "Metadata_Well", ""))
    csv_case(source, out, "csv-short-cytoplasm", lambda f: drop_last_row(f, "Cytoplasm"))
    csv_case(source, out, "csv-text-feature", lambda f: set_value(f, "Nuclei", 3, "AreaShape_Area", "n/a"))
    csv_case(source, out, "csv-unsorted", lambda f: unsorted(f, "Nuclei"))
    data = Path(backend).read_bytes()
    (out / "truncated.sqlite").write_bytes(data[: len(data) // 2])
    sqlite_case(backend, out, "no-imagenumber.sqlite", ["ALTER TABLE Per_Nuclei RENAME COLUMN ImageNumber TO ImgNo"])
    sqlite_case(
        backend,
        out,
        "dangling-parent.sqlite",
        ["UPDATE Per_Cytoplasm SET Cytoplasm_Parent_Nuclei = 999 WHERE rowid = (SELECT min(rowid) FROM Per_Cytoplasm)"],
    )
    sqlite_case(backend, out, "no-metadata.sqlite", ["UPDATE Per_Image SET Image_Metadata_Well = NULL WHERE ImageNumber = 2"])
    sqlite_case(backend, out, "tablenumber.sqlite", ["ALTER TABLE Per_Image ADD COLUMN TableNumber INTEGER DEFAULT 1"])
    sqlite_case(
        backend,
        out,
        "view.sqlite",
        [
            "ALTER TABLE Per_Nuclei RENAME TO Per_Nuclei_data",
            "CREATE VIEW Per_Nuclei AS WITH RECURSIVE forever(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM forever) "
            "SELECT Per_Nuclei_data.* FROM Per_Nuclei_data, forever",
        ],
    )
    sqlite_case(
        backend,
        out,
        "generated.sqlite",
        ["ALTER TABLE Per_Cells ADD COLUMN Cells_Huge BLOB AS (zeroblob(900000000)) VIRTUAL"],
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
