//! ExportToSpreadsheet CSVs: `Image.csv` (one row per image: `ImageNumber`, `Metadata_*`,
//! `Count_<Compartment>`, …) and one file per compartment whose columns are unprefixed
//! (`ImageNumber`, `ObjectNumber`, `AreaShape_Area`, `Parent_Cells`, …). Each compartment file is
//! streamed record by record and grouped by image, so it must be sorted by `ImageNumber`, as
//! CellProfiler writes it.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::source::{
    first_names, Compartment, GroupSource, Grouper, ImageRow, ImageTable, Layout, ObjectGroup,
    Place, Value,
};

/// `<dir>/<prefix><Name>.csv`; the prefix was checked to be a plain file-name fragment.
pub fn csv_path(dir: &Path, prefix: &str, name: &str) -> PathBuf {
    dir.join(format!("{prefix}{name}.csv"))
}

fn open_csv(path: &Path) -> anyhow::Result<csv::Reader<File>> {
    let file = phenoflow_schemas::open_regular_file(path)
        .map_err(|source| anyhow::Error::new(source).context(format!("{}", path.display())))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(file))
}

fn csv_error(path: &Path, error: csv::Error) -> anyhow::Error {
    let line = error
        .position()
        .map(|position| format!(" line {}", position.line()))
        .unwrap_or_default();
    match error.kind() {
        csv::ErrorKind::Io(_) => anyhow::Error::new(error).context(format!(
            "{}:{line}: reading the file failed",
            path.display()
        )),
        _ => crate::input_error(format!("{}:{line}: {error}", path.display())),
    }
}

fn headers(reader: &mut csv::Reader<File>, path: &Path) -> anyhow::Result<Vec<String>> {
    let headers = reader
        .headers()
        .map_err(|error| csv_error(path, error))?
        .iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    if headers.is_empty() || headers.iter().all(String::is_empty) {
        return Err(crate::input_error(format!(
            "{}: empty file (no header line)",
            path.display()
        )));
    }
    Ok(headers)
}

/// Reads `Image.csv` whole, keeping only `ImageNumber`, the `Metadata_*` columns and the
/// `Count_<Compartment>` counts.
pub fn read_images(path: &Path) -> anyhow::Result<ImageTable> {
    let source = path.display().to_string();
    let mut reader = open_csv(path)?;
    let names = headers(&mut reader, path)?;
    let image = names
        .iter()
        .position(|name| name == "ImageNumber")
        .ok_or_else(|| {
            crate::input_error(format!(
                "{source}: no `ImageNumber` column (its columns: {})",
                first_names(&names)
            ))
        })?;
    let metadata: Vec<usize> = (0..names.len())
        .filter(|&index| names[index].starts_with(phenoflow_schemas::columns::PREFIX))
        .collect();
    let counts: Vec<Option<usize>> = Compartment::ALL
        .iter()
        .map(|compartment| {
            names
                .iter()
                .position(|name| *name == format!("Count_{}", compartment.name()))
        })
        .collect();
    let mut rows: Vec<ImageRow> = Vec::new();
    let mut record = csv::StringRecord::new();
    while reader
        .read_record(&mut record)
        .map_err(|error| csv_error(path, error))?
    {
        let line = record.position().map_or(0, |position| position.line());
        let number: i64 = record[image].trim().parse().map_err(|_| {
            crate::input_error(format!(
                "{source}: line {line}: ImageNumber `{}` is not an integer",
                crate::shorten(&record[image])
            ))
        })?;
        let mut image_counts = [None; 3];
        for (slot, column) in image_counts.iter_mut().zip(&counts) {
            // CellProfiler writes counts as `109.0` in some versions.
            *slot = column.and_then(|index| match Value::parse(record[index].trim()) {
                Value::Int(count) => Some(count),
                Value::Real(count) => crate::source::whole_number(count),
                _ => None,
            });
        }
        rows.push(ImageRow {
            number,
            metadata: metadata
                .iter()
                .map(|&index| Value::parse(&record[index]))
                .collect(),
            counts: image_counts,
        });
    }
    ImageTable::new(
        source,
        metadata.iter().map(|&index| names[index].clone()).collect(),
        rows,
    )
}

/// One compartment CSV, image by image.
#[derive(Debug)]
pub struct CsvGroups {
    reader: csv::Reader<File>,
    path: PathBuf,
    source: String,
    layout: Layout,
    features: Vec<String>,
    record: csv::StringRecord,
    grouper: Grouper,
    done: bool,
    parents: Vec<i64>,
    values: Vec<f64>,
}

impl CsvGroups {
    pub fn open(path: &Path, compartment: Compartment) -> anyhow::Result<Self> {
        let mut reader = open_csv(path)?;
        let names = headers(&mut reader, path)?;
        let source = path.display().to_string();
        let layout = Layout::find(compartment, &source, &names, "", "ObjectNumber")?;
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            features: layout
                .features
                .iter()
                .map(|(_, name)| name.clone())
                .collect(),
            source,
            layout,
            record: csv::StringRecord::new(),
            grouper: Grouper::default(),
            done: false,
            parents: Vec::new(),
            values: Vec::new(),
        })
    }
}

impl GroupSource for CsvGroups {
    fn source(&self) -> &str {
        &self.source
    }

    fn features(&self) -> &[String] {
        &self.features
    }

    fn next_group(&mut self) -> anyhow::Result<Option<ObjectGroup>> {
        while !self.done {
            if !self
                .reader
                .read_record(&mut self.record)
                .map_err(|error| csv_error(&self.path, error))?
            {
                self.done = true;
                break;
            }
            let record = &self.record;
            let line = record.position().map_or(0, |position| position.line());
            let integer = |index: usize, what: &str| -> anyhow::Result<i64> {
                record[index].trim().parse().map_err(|_| {
                    crate::input_error(format!(
                        "{}: line {line}: {what} `{}` is not an integer",
                        self.source,
                        crate::shorten(&record[index])
                    ))
                })
            };
            let image = integer(self.layout.image, "ImageNumber")?;
            let object = integer(self.layout.object, "ObjectNumber")?;
            let place = Place {
                source: &self.source,
                image,
                object,
            };
            self.parents.clear();
            for &index in &self.layout.parents {
                self.parents.push(integer(index, "a Parent_ link")?);
            }
            self.values.clear();
            for (index, name) in &self.layout.features {
                let text = &record[*index];
                self.values
                    .push(crate::parse_measurement(text).ok_or_else(|| {
                        crate::input_error(format!(
                            "{place} (line {line}): column `{}` holds `{}`, not a number",
                            name.split_once('_').map_or(name.as_str(), |(_, rest)| rest),
                            crate::shorten(text)
                        ))
                    })?);
            }
            if let Some(group) =
                self.grouper
                    .push(&self.source, image, object, &self.parents, &self.values)?
            {
                return Ok(Some(group));
            }
        }
        Ok(self.grouper.finish())
    }
}
