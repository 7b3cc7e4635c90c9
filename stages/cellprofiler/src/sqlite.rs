//! The ExportToDatabase SQLite backend: `Per_Image` with `Image_Metadata_*` and `Image_Count_*`
//! columns, and `Per_<Compartment>` tables whose columns carry the compartment's prefix and whose
//! objects are keyed by `ImageNumber` + `<Compartment>_Number_Object_Number`.
//!
//! The file is opened read-only. Table and column names come from the file (`pragma_table_info`)
//! and are only ever used as quoted identifiers; nothing in it runs as code. Each compartment is
//! read by one ordered query (`ORDER BY ImageNumber, <object>`, which walks the table's primary
//! key index) and grouped image by image, so memory holds one image's objects at a time.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Rows, Statement};

use crate::source::{
    first_names, Compartment, GroupSource, Grouper, ImageRow, ImageTable, Layout, ObjectGroup,
    Place, Value,
};

/// A rusqlite error as the stage reports it: a file that is not a database, is damaged or
/// truncated, or is held locked by another process is the user's input (exit 2).
pub fn sqlite_error(path: &Path, error: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode;
    let code = error.sqlite_error_code();
    let hint = match code {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            " (another process holds the database locked; --busy-timeout-ms waits longer)"
        }
        Some(ErrorCode::DatabaseCorrupt) => " (the file is damaged or truncated)",
        Some(ErrorCode::NotADatabase) => " (not a SQLite database)",
        _ => "",
    };
    let message = format!("{}: SQLite: {error}{hint}", path.display());
    match code {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::NotADatabase
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::ReadOnly,
        ) => crate::input_error(message),
        _ => anyhow::anyhow!(message),
    }
}

/// Opens the backend read-only and checks that it is a database.
pub fn open(path: &Path, busy_timeout_ms: u32) -> anyhow::Result<Connection> {
    phenoflow_schemas::open_regular_file(path)
        .map_err(|source| anyhow::Error::new(source).context(format!("{}", path.display())))?;
    // The bundled SQLite reads a file name starting with `file:` as a URI (which can name another
    // file or VFS than the one checked and hashed): `./file:…` is always the file itself.
    let opened = if path.to_string_lossy().starts_with("file:") {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    };
    let connection = Connection::open_with_flags(
        &opened,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|error| sqlite_error(path, error))?;
    // Functions in whatever schema SQL is still evaluated may only be innocuous ones.
    connection
        .pragma_update(None, "trusted_schema", "OFF")
        .map_err(|error| sqlite_error(path, error))?;
    connection
        .busy_timeout(Duration::from_millis(u64::from(busy_timeout_ms)))
        .map_err(|error| sqlite_error(path, error))?;
    connection
        .query_row("SELECT count(*) FROM sqlite_master", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(|error| sqlite_error(path, error))?;
    Ok(connection)
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// The column names of `table`, or an error listing the file's tables. Only a plain table is
/// read: a view, a virtual table or a generated column would make the file's own SQL run on every
/// read (a recursive view can hang the stage, `randomblob` in each row exhaust its memory).
fn columns(connection: &Connection, path: &Path, table: &str) -> anyhow::Result<Vec<String>> {
    let kind: Option<(String, String)> = connection
        .query_row(
            "SELECT type, coalesce(sql, '') FROM sqlite_master WHERE name = ?1 COLLATE NOCASE",
            [table],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })
        .map_err(|error| sqlite_error(path, error))?;
    if let Some((kind, sql)) = &kind {
        let is_virtual = sql
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("CREATE VIRTUAL");
        if kind != "table" || is_virtual {
            return Err(crate::input_error(format!(
                "{}: `{table}` is a {}, not a table CellProfiler wrote; its SQL is not run",
                path.display(),
                if is_virtual {
                    "virtual table"
                } else {
                    kind.as_str()
                }
            )));
        }
    }
    let mut statement = connection
        .prepare("SELECT name, hidden FROM pragma_table_xinfo(?1)")
        .map_err(|error| sqlite_error(path, error))?;
    let described = statement
        .query_map([table], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|error| sqlite_error(path, error))?;
    if let Some((name, _)) = described.iter().find(|(_, hidden)| *hidden >= 2) {
        return Err(crate::input_error(format!(
            "{}: column `{name}` of `{table}` is a generated column (computed by the file's SQL on every \
             read), not a measurement CellProfiler wrote",
            path.display()
        )));
    }
    let names: Vec<String> = described.into_iter().map(|(name, _)| name).collect();
    if names.is_empty() {
        let mut statement = connection
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .map_err(|error| sqlite_error(path, error))?;
        let tables = statement
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|error| sqlite_error(path, error))?;
        return Err(crate::input_error(format!(
            "{}: no table `{table}` (its tables: {}; --table-prefix names the prefix)",
            path.display(),
            first_names(&tables)
        )));
    }
    Ok(names)
}

fn integer(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(int) => Some(int),
        ValueRef::Real(real) => crate::source::whole_number(real),
        ValueRef::Text(text) => std::str::from_utf8(text).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Reads `<prefix>Image`: its image numbers, `Image_Metadata_*` columns (named `Metadata_*`) and
/// `Image_Count_<Compartment>` counts.
pub fn read_images(
    connection: &Connection,
    path: &Path,
    prefix: &str,
) -> anyhow::Result<ImageTable> {
    let table = format!("{prefix}Image");
    let source = format!("{} (table {table})", path.display());
    let names = columns(connection, path, &table)?;
    if !names.iter().any(|name| name == "ImageNumber") {
        return Err(crate::input_error(format!(
            "{source}: no `ImageNumber` column (its columns: {})",
            first_names(&names)
        )));
    }
    // cytominer-database merges several CellProfiler runs into one file, each numbering its
    // images from 1, told apart by TableNumber: not read here (yet), rather than mixed up.
    if names.iter().any(|name| name == "TableNumber") {
        return Err(crate::input_error(format!(
            "{source}: has a `TableNumber` column (several CellProfiler runs merged into one database, whose \
             image numbers repeat); this is not supported: give each run's own backend, one pf-cellprofiler \
             each, and every single-cell table to pf-aggregate"
        )));
    }
    let metadata: Vec<&String> = names
        .iter()
        .filter(|name| name.starts_with("Image_Metadata_"))
        .collect();
    let counts: Vec<Option<&String>> = Compartment::ALL
        .iter()
        .map(|compartment| {
            names
                .iter()
                .find(|name| **name == format!("Image_Count_{}", compartment.name()))
        })
        .collect();
    let mut selected = vec![quote("ImageNumber")];
    selected.extend(metadata.iter().map(|name| quote(name)));
    selected.extend(counts.iter().flatten().map(|name| quote(name)));
    let sql = format!("SELECT {} FROM {}", selected.join(", "), quote(&table));
    let mut statement = connection
        .prepare(&sql)
        .map_err(|error| sqlite_error(path, error))?;
    let mut rows = statement
        .query([])
        .map_err(|error| sqlite_error(path, error))?;
    let mut images: Vec<ImageRow> = Vec::new();
    while let Some(row) = rows.next().map_err(|error| sqlite_error(path, error))? {
        let value = |index: usize| row.get_ref(index).expect("selected column");
        let number = integer(value(0)).ok_or_else(|| {
            crate::input_error(format!(
                "{source}: row {}: ImageNumber is not an integer",
                images.len()
            ))
        })?;
        let mut values = Vec::with_capacity(metadata.len());
        for index in 0..metadata.len() {
            values.push(match value(1 + index) {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(int) => Value::Int(int),
                ValueRef::Real(real) => Value::Real(real),
                ValueRef::Text(text) | ValueRef::Blob(text) => {
                    Value::Text(String::from_utf8_lossy(text).into_owned())
                }
            });
        }
        let mut image_counts = [None; 3];
        let mut next = 1 + metadata.len();
        for (slot, column) in image_counts.iter_mut().zip(&counts) {
            if column.is_some() {
                *slot = integer(value(next));
                next += 1;
            }
        }
        images.push(ImageRow {
            number,
            metadata: values,
            counts: image_counts,
        });
    }
    ImageTable::new(
        source,
        metadata
            .iter()
            .map(|name| name.trim_start_matches("Image_").to_string())
            .collect(),
        images,
    )
}

/// The ordered query of one compartment table, prepared; [`SqliteGroups`] runs it.
#[derive(Debug)]
pub struct CompartmentQuery<'c> {
    statement: Statement<'c>,
    source: String,
    features: Vec<String>,
    n_parents: usize,
}

impl<'c> CompartmentQuery<'c> {
    pub fn prepare(
        connection: &'c Connection,
        path: &Path,
        prefix: &str,
        compartment: Compartment,
    ) -> anyhow::Result<Self> {
        let table = format!("{prefix}{}", compartment.name());
        let source = format!("{} (table {table})", path.display());
        let names = columns(connection, path, &table)?;
        let column_prefix = format!("{}_", compartment.name());
        let object = format!("{column_prefix}Number_Object_Number");
        let layout = Layout::find(compartment, &source, &names, &column_prefix, &object)?;
        let mut selected = vec![quote(&names[layout.image]), quote(&names[layout.object])];
        selected.extend(layout.parents.iter().map(|&index| quote(&names[index])));
        selected.extend(
            layout
                .features
                .iter()
                .map(|(index, _)| quote(&names[*index])),
        );
        let sql = format!(
            "SELECT {} FROM {} ORDER BY {}, {}",
            selected.join(", "),
            quote(&table),
            quote(&names[layout.image]),
            quote(&names[layout.object])
        );
        let statement = connection
            .prepare(&sql)
            .map_err(|error| sqlite_error(path, error))?;
        Ok(Self {
            statement,
            source,
            features: layout.features.into_iter().map(|(_, name)| name).collect(),
            n_parents: layout.parents.len(),
        })
    }

    pub fn run<'s>(&'s mut self, path: &'s Path) -> anyhow::Result<SqliteGroups<'s>> {
        let rows = self
            .statement
            .query([])
            .map_err(|error| sqlite_error(path, error))?;
        Ok(SqliteGroups {
            rows,
            path,
            source: &self.source,
            features: &self.features,
            n_parents: self.n_parents,
            grouper: Grouper::default(),
            done: false,
            parents: Vec::new(),
            values: Vec::new(),
        })
    }
}

/// One compartment's rows, image by image.
pub struct SqliteGroups<'s> {
    rows: Rows<'s>,
    path: &'s Path,
    source: &'s str,
    features: &'s [String],
    n_parents: usize,
    grouper: Grouper,
    done: bool,
    parents: Vec<i64>,
    values: Vec<f64>,
}

impl std::fmt::Debug for SqliteGroups<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteGroups")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl GroupSource for SqliteGroups<'_> {
    fn source(&self) -> &str {
        self.source
    }

    fn features(&self) -> &[String] {
        self.features
    }

    fn next_group(&mut self) -> anyhow::Result<Option<ObjectGroup>> {
        while !self.done {
            let Some(row) = self
                .rows
                .next()
                .map_err(|error| sqlite_error(self.path, error))?
            else {
                self.done = true;
                break;
            };
            let value = |index: usize| row.get_ref(index).expect("selected column");
            let image = integer(value(0)).ok_or_else(|| {
                crate::input_error(format!(
                    "{}: a row's ImageNumber is not an integer",
                    self.source
                ))
            })?;
            let object = integer(value(1)).ok_or_else(|| {
                crate::input_error(format!(
                    "{}: ImageNumber {image}: an object number is not an integer",
                    self.source
                ))
            })?;
            let place = Place {
                source: self.source,
                image,
                object,
            };
            self.parents.clear();
            for index in 0..self.n_parents {
                // A cytoplasm without a parent (NULL) names object 0, which no object is.
                self.parents.push(match value(2 + index) {
                    ValueRef::Null => 0,
                    other => integer(other).ok_or_else(|| {
                        crate::input_error(format!("{place}: a Parent_ link is not an integer"))
                    })?,
                });
            }
            self.values.clear();
            let first = 2 + self.n_parents;
            for (offset, name) in self.features.iter().enumerate() {
                self.values.push(match value(first + offset) {
                    ValueRef::Null => f64::NAN,
                    ValueRef::Integer(int) => int as f64,
                    ValueRef::Real(real) => real,
                    ValueRef::Text(text) => {
                        let text = String::from_utf8_lossy(text);
                        crate::parse_measurement(&text).ok_or_else(|| {
                            crate::input_error(format!(
                                "{place}: column `{name}` holds text `{}`, not a number",
                                crate::shorten(&text)
                            ))
                        })?
                    }
                    ValueRef::Blob(_) => {
                        return Err(crate::input_error(format!(
                            "{place}: column `{name}` holds a blob, not a number"
                        )))
                    }
                });
            }
            if let Some(group) =
                self.grouper
                    .push(self.source, image, object, &self.parents, &self.values)?
            {
                return Ok(Some(group));
            }
        }
        Ok(self.grouper.finish())
    }
}
