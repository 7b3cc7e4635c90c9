//! [`ParquetTableReader`] and the footer readers: a table streamed batch by batch and checked,
//! text read as `Utf8` whatever it was written as; provenance, null counts and row-group sizes
//! from the footer alone. Every footer read is checked against its file's length
//! ([`check_column_chunks`]) before a page is read.

use super::*;

/// Streams one table's record batches, checking its schema once and every batch's values.
#[derive(Debug)]
pub struct ParquetTableReader {
    kind: TableKind,
    path: PathBuf,
    schema: SchemaRef,
    provenance: Option<Provenance>,
    key_values: BTreeMap<String, String>,
    n_rows: usize,
    reader: ParquetRecordBatchReader,
    rows_read: usize,
}

/// The schema with every top-level `LargeUtf8` / `Utf8View` column as `Utf8` (field names,
/// nullability and metadata kept), or `None` when there is none.
pub(super) fn utf8_schema(schema: &SchemaRef) -> Option<SchemaRef> {
    let wide = |field: &arrow_schema::Field| {
        matches!(field.data_type(), DataType::LargeUtf8 | DataType::Utf8View)
    };
    if !schema.fields().iter().any(|field| wide(field)) {
        return None;
    }
    let fields: Vec<arrow_schema::Field> = schema
        .fields()
        .iter()
        .map(|field| {
            if wide(field) {
                field.as_ref().clone().with_data_type(DataType::Utf8)
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    Some(Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

impl ParquetTableReader {
    /// Opens `path` as table `kind`. Files written by phenoflow must say they hold `kind`; files
    /// from elsewhere (no provenance) are accepted when their columns fit. `columns`, when given,
    /// reads only those top-level columns (the schema check still covers the whole file).
    pub fn open(
        path: &Path,
        kind: TableKind,
        batch_rows: usize,
        columns: Option<&[&str]>,
    ) -> Result<Self, SchemaError> {
        let file = File::open(path).map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parquet_error = |source| SchemaError::Parquet {
            path: path.to_path_buf(),
            source,
        };
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(parquet_error)?;
        check_column_chunks(path, metadata.metadata(), file_length(&file, path)?)?;
        // Text arrives as `Utf8`, `LargeUtf8` (pandas, Polars) or `Utf8View` (Polars); the
        // stages read one: every top-level string column is decoded as `Utf8`.
        let metadata = match utf8_schema(metadata.schema()) {
            Some(schema) => ArrowReaderMetadata::try_new(
                metadata.metadata().clone(),
                ArrowReaderOptions::new().with_schema(schema),
            )
            .map_err(parquet_error)?,
            None => metadata,
        };
        let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, metadata);
        let key_values = footer_key_values(&builder);
        let provenance = if key_values.contains_key("phenoflow.schema") {
            let provenance = Provenance::from_key_values(&key_values, path)?;
            if provenance.table != kind {
                return Err(SchemaError::WrongTable {
                    path: path.to_path_buf(),
                    expected: kind.name(),
                    found: provenance.table.name().to_string(),
                });
            }
            Some(provenance)
        } else {
            None
        };
        let full_schema = builder.schema().clone();
        kind.validate_schema(&full_schema, path)?;
        let n_rows = usize::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
        let builder = builder.with_batch_size(batch_rows.max(1));
        let builder = match columns {
            Some(names) => {
                let indices: Vec<usize> = names
                    .iter()
                    .map(|name| {
                        full_schema
                            .index_of(name)
                            .map_err(|_| SchemaError::MissingColumn {
                                path: path.to_path_buf(),
                                table: kind.name(),
                                column: name.to_string(),
                            })
                    })
                    .collect::<Result<_, _>>()?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                builder.with_projection(mask)
            }
            None => builder,
        };
        let reader = builder.build().map_err(parquet_error)?;
        Ok(Self {
            kind,
            path: path.to_path_buf(),
            schema: reader.schema(),
            provenance,
            key_values,
            n_rows,
            reader,
            rows_read: 0,
        })
    }

    /// The schema of the batches this reader yields (after projection).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn provenance(&self) -> Option<&Provenance> {
        self.provenance.as_ref()
    }

    /// All key-value metadata of the file.
    pub fn key_values(&self) -> &BTreeMap<String, String> {
        &self.key_values
    }

    /// Row count from the file footer.
    pub fn n_rows(&self) -> usize {
        self.n_rows
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Iterator for ParquetTableReader {
    type Item = Result<RecordBatch, SchemaError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = match self.reader.next()? {
            Ok(batch) => batch,
            Err(source) => {
                return Some(Err(SchemaError::Arrow {
                    path: self.path.clone(),
                    source,
                }))
            }
        };
        let first_row = self.rows_read;
        self.rows_read += batch.num_rows();
        Some(
            self.kind
                .validate_batch(&batch, &self.path, first_row)
                .map(|()| batch),
        )
    }
}

/// The key-value metadata of a Parquet file's footer (keys without a value are left out).
pub(super) fn footer_key_values(
    builder: &ParquetRecordBatchReaderBuilder<File>,
) -> BTreeMap<String, String> {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|pairs| {
            pairs
                .iter()
                .filter_map(|pair| Some((pair.key.clone(), pair.value.clone()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The provenance of a Parquet file (from its footer only), or `None` for a file not written by
/// phenoflow.
pub fn read_provenance(path: &Path) -> Result<Option<Provenance>, SchemaError> {
    let builder = footer(path)?;
    let key_values = footer_key_values(&builder);
    if !key_values.contains_key("phenoflow.schema") {
        return Ok(None);
    }
    Provenance::from_key_values(&key_values, path).map(Some)
}

/// Nulls per top-level column of a Parquet file, from the footer's statistics (no rows are
/// read): `None` for a column some row group has no null count for.
pub fn column_null_counts(path: &Path) -> Result<BTreeMap<String, Option<u64>>, SchemaError> {
    let builder = footer(path)?;
    let metadata = builder.metadata();
    let mut counts: BTreeMap<String, Option<u64>> = BTreeMap::new();
    for row_group in metadata.row_groups() {
        for column in row_group.columns() {
            let Some(name) = column.column_path().parts().first() else {
                continue;
            };
            let nulls = column.statistics().and_then(|s| s.null_count_opt());
            let entry = counts.entry(name.clone()).or_insert(Some(0));
            *entry = match (*entry, nulls) {
                (Some(sum), Some(n)) => Some(sum + n),
                _ => None,
            };
        }
    }
    Ok(counts)
}

/// The uncompressed size in bytes of a Parquet file's largest row group (from the footer),
/// counting only the top-level `columns` given (all when `None`), and that row group's index:
/// readers that load a row group's columns at a time need this much memory.
pub fn largest_row_group(
    path: &Path,
    columns: Option<&BTreeSet<String>>,
) -> Result<Option<(usize, u64)>, SchemaError> {
    let builder = footer(path)?;
    Ok(builder
        .metadata()
        .row_groups()
        .iter()
        .enumerate()
        .map(|(index, group)| {
            let bytes: i64 = group
                .columns()
                .iter()
                .filter(|column| {
                    columns.is_none_or(|wanted| {
                        column
                            .column_path()
                            .parts()
                            .first()
                            .is_some_and(|name| wanted.contains(name))
                    })
                })
                .map(|column| column.uncompressed_size().max(0))
                .sum();
            (index, bytes as u64)
        })
        .max_by_key(|(_, bytes)| *bytes))
}

/// The Arrow schema of a Parquet file (all columns), without reading any rows.
pub fn file_schema(path: &Path) -> Result<SchemaRef, SchemaError> {
    Ok(footer(path)?.schema().clone())
}

/// A reader builder over `path`, which has read the footer (schema and key-value metadata) only.
pub(super) fn footer(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, SchemaError> {
    let file = File::open(path).map_err(|source| SchemaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let length = file_length(&file, path)?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| SchemaError::Parquet {
            path: path.to_path_buf(),
            source,
        })?;
    check_column_chunks(path, builder.metadata(), length)?;
    Ok(builder)
}

fn file_length(file: &File, path: &Path) -> Result<u64, SchemaError> {
    Ok(file
        .metadata()
        .map_err(|source| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len())
}

/// Every column chunk lies inside the file (`length` bytes) where its footer places it; else
/// an error naming the row group and the column. arrow-rs reads a chunk's pages at the offset
/// and within the size the footer gives, and through a `File` it allocates each page's buffer
/// at the size the page's header claims before reading it: a damaged or forged footer (a chunk
/// of an exabyte, at a negative offset, past the end) would otherwise end in an allocation
/// failure, an abort, or a panic, not an error; Polars' reader too read for a minute before it
/// was killed.
pub fn check_column_chunks(
    path: &Path,
    metadata: &parquet::file::metadata::ParquetMetaData,
    length: u64,
) -> Result<(), SchemaError> {
    for (index, row_group) in metadata.row_groups().iter().enumerate() {
        for column in row_group.columns() {
            if column_chunk_range(column).is_none_or(|(_, end)| end > length) {
                let start = column
                    .dictionary_page_offset()
                    .unwrap_or_else(|| column.data_page_offset());
                let size = column.compressed_size();
                return Err(SchemaError::Parquet {
                    path: path.to_path_buf(),
                    source: ParquetError::General(format!(
                        "row group {index}, column `{}`: the footer places its {size} bytes at offset {start}, \
                         outside the file ({length} bytes)",
                        column.column_path().string()
                    )),
                });
            }
        }
    }
    Ok(())
}

/// Where a column chunk's bytes lie in its file as its footer places them, `(start, end)`; `None`
/// where the footer's numbers are negative or their sum overflows.
pub fn column_chunk_range(
    column: &parquet::file::metadata::ColumnChunkMetaData,
) -> Option<(u64, u64)> {
    let start = column
        .dictionary_page_offset()
        .unwrap_or_else(|| column.data_page_offset());
    let start = u64::try_from(start).ok()?;
    let end = start.checked_add(u64::try_from(column.compressed_size()).ok()?)?;
    Some((start, end))
}

/// Reads a whole (small) table into memory.
pub fn read_table(path: &Path, kind: TableKind) -> Result<Vec<RecordBatch>, SchemaError> {
    ParquetTableReader::open(path, kind, 8192, None)?.collect()
}
