//! A small layer over the `csv` crate for the published tables: columns looked up by name (with
//! accepted alternative spellings), values checked as they are read, and every error naming the
//! file, the line and the column. Old-Mac `\r` line endings (the BBBC021 MoA table) are handled
//! by the reader's CR/LF terminator.

use std::path::{Path, PathBuf};

use crate::error::{PreprocessError, Result};

/// An opened CSV file: its header and records, each with its line number.
#[derive(Debug)]
pub struct CsvTable {
    pub path: PathBuf,
    headers: Vec<String>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl CsvTable {
    pub fn read(path: &Path) -> Result<Self> {
        let csv_error = |source| PreprocessError::Csv {
            path: path.to_path_buf(),
            source,
        };
        let file =
            phenoflow_schemas::open_regular_file(path).map_err(|source| PreprocessError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let mut reader = csv::ReaderBuilder::new()
            .terminator(csv::Terminator::CRLF)
            .from_reader(std::io::BufReader::new(file));
        let headers: Vec<String> = reader
            .headers()
            .map_err(csv_error)?
            .iter()
            .map(|name| name.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        if headers.iter().all(String::is_empty) {
            return Err(PreprocessError::Invalid(format!(
                "{}: empty file (no header row)",
                path.display()
            )));
        }
        // Line numbers are counted by record (the header is line 1), not by `\n`, so that they
        // are right for CR-terminated files too; none of the supported tables has line breaks
        // inside quoted values.
        let mut rows = Vec::new();
        for (index, record) in reader.records().enumerate() {
            rows.push((index as u64 + 2, record.map_err(csv_error)?));
        }
        Ok(Self {
            path: path.to_path_buf(),
            headers,
            rows,
        })
    }

    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(move |(line, record)| Row {
            table: self,
            line: *line,
            record,
        })
    }

    /// Index of the first of `names` that the header has.
    pub fn find(&self, names: &[&str]) -> Option<Column> {
        names.iter().find_map(|name| {
            self.headers
                .iter()
                .position(|header| header == name)
                .map(|index| Column {
                    index,
                    name: name.to_string(),
                })
        })
    }

    /// Like [`find`](Self::find), but a missing column is an error naming the first spelling.
    pub fn require(&self, names: &[&str]) -> Result<Column> {
        self.find(names)
            .ok_or_else(|| PreprocessError::MissingColumn {
                path: self.path.clone(),
                column: names.join("` or `"),
                present: self.headers.join(", "),
            })
    }
}

/// A column found in the header.
#[derive(Debug, Clone)]
pub struct Column {
    index: usize,
    name: String,
}

/// One record with its line number, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    table: &'a CsvTable,
    pub line: u64,
    record: &'a csv::StringRecord,
}

impl<'a> Row<'a> {
    pub fn error(&self, column: &Column, reason: impl Into<String>) -> PreprocessError {
        PreprocessError::BadValue {
            path: self.table.path.clone(),
            line: self.line,
            column: column.name.clone(),
            reason: reason.into(),
        }
    }

    /// The trimmed value, which must not be empty.
    pub fn text(&self, column: &Column) -> Result<&'a str> {
        let value = self.record.get(column.index).unwrap_or("").trim();
        if value.is_empty() {
            return Err(self.error(column, "empty value"));
        }
        Ok(value)
    }

    pub fn optional_text(&self, column: Option<&Column>) -> Option<&'a str> {
        let value = self.record.get(column?.index)?.trim();
        (!value.is_empty()).then_some(value)
    }

    /// A finite number.
    pub fn number(&self, column: &Column) -> Result<f64> {
        let text = self.text(column)?;
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(value),
            _ => Err(self.error(column, format!("`{text}` is not a finite number"))),
        }
    }

    pub fn integer(&self, column: &Column) -> Result<i64> {
        let text = self.text(column)?;
        text.parse::<i64>()
            .map_err(|_| self.error(column, format!("`{text}` is not an integer")))
    }

    pub fn optional_integer(&self, column: Option<&Column>) -> Result<Option<i64>> {
        match column {
            Some(column) if self.optional_text(Some(column)).is_some() => {
                self.integer(column).map(Some)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carriage_return_lines_and_errors_with_line_numbers() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("moa.csv");
        std::fs::write(&path, "compound,concentration,moa\rA,3,X\rB,,Y").unwrap();
        let table = CsvTable::read(&path).unwrap();
        assert_eq!(table.n_rows(), 2);
        let concentration = table.require(&["concentration"]).unwrap();
        let rows: Vec<_> = table.rows().collect();
        assert_eq!(rows[0].number(&concentration).unwrap(), 3.0);
        let error = rows[1].number(&concentration).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "{}: line 3: column `concentration`: empty value",
                path.display()
            )
        );
        let missing = table.require(&["dose", "Dose"]).unwrap_err().to_string();
        assert!(
            missing.contains("missing required column `dose` or `Dose`"),
            "{missing}"
        );
    }
}
