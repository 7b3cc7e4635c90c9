//! Building and reading `cells` record batches: one row per cell with its keys, location and raw
//! `uint16` pixel tensor `[C,H,W]`. Every stage that writes or reads cells goes through here so
//! the column order, types and tensor layout exist in one place.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float64Array, Int32Array, RecordBatch, StringArray,
    UInt16Array,
};
use arrow_buffer::NullBuffer;
use arrow_schema::{Field, Schema, SchemaRef};

use crate::tensor::{TensorShape, PIXELS_COLUMN};
use crate::{SchemaError, TableKind};

/// The key columns of one cell (everything but the pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct CellKeys {
    pub plate: String,
    pub well: String,
    pub site: i32,
    pub compound: String,
    /// Concentration in µM, as in `BBBC021_v1_moa.csv`.
    pub concentration: f64,
    pub moa: Option<String>,
    pub batch: String,
    /// 1-based number of the object within its field.
    pub object_number: i32,
    /// Centre of the crop in the field, in pixels (x = column, y = row), when known.
    pub center_x: Option<f64>,
    pub center_y: Option<f64>,
}

/// The Arrow schema of a `cells` table with the given tensor shape.
pub fn cells_schema(shape: TensorShape) -> SchemaRef {
    Arc::new(Schema::new(TableKind::Cells.required_fields(Some(shape))))
}

/// Accumulates cells and turns them into one record batch.
#[derive(Debug)]
pub struct CellsBatchBuilder {
    shape: TensorShape,
    schema: SchemaRef,
    keys: Vec<CellKeys>,
    pixels: Vec<u16>,
}

impl CellsBatchBuilder {
    pub fn new(shape: TensorShape) -> Self {
        Self {
            shape,
            schema: cells_schema(shape),
            keys: Vec::new(),
            pixels: Vec::new(),
        }
    }

    /// A builder with room for `n_cells` cells, so that filling it does not reallocate.
    pub fn with_capacity(shape: TensorShape, n_cells: usize) -> Self {
        let mut builder = Self::new(shape);
        builder.reserve(n_cells);
        builder
    }

    /// Makes room for `n_cells` more cells.
    pub fn reserve(&mut self, n_cells: usize) {
        self.keys.reserve(n_cells);
        self.pixels.reserve(n_cells * self.shape.len());
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn shape(&self) -> TensorShape {
        self.shape
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Appends one cell. `pixels` is `[C,H,W]` row-major and must have the builder's shape.
    pub fn push(&mut self, keys: CellKeys, pixels: &[u16]) {
        assert_eq!(
            pixels.len(),
            self.shape.len(),
            "cell pixels do not match the tensor shape {}",
            self.shape
        );
        self.keys.push(keys);
        self.pixels.extend_from_slice(pixels);
    }

    /// Builds the batch and empties the builder.
    pub fn finish(&mut self) -> RecordBatch {
        let keys = std::mem::take(&mut self.keys);
        let pixels = std::mem::take(&mut self.pixels);
        let strings = |get: fn(&CellKeys) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(keys.iter().map(get)))
        };
        let moa: ArrayRef = Arc::new(StringArray::from_iter(
            keys.iter().map(|k| k.moa.as_deref()),
        ));
        let floats = |get: fn(&CellKeys) -> Option<f64>| -> ArrayRef {
            Arc::new(Float64Array::from_iter(keys.iter().map(get)))
        };
        let pixel_field = Arc::new(Field::new("item", arrow_schema::DataType::UInt16, true));
        let pixel_values = Arc::new(UInt16Array::from(pixels));
        let pixels = FixedSizeListArray::try_new(
            pixel_field,
            self.shape.len() as i32,
            pixel_values,
            None::<NullBuffer>,
        )
        .expect("pixel buffer length is a multiple of the tensor size");
        let columns: Vec<ArrayRef> = vec![
            strings(|k| &k.plate),
            strings(|k| &k.well),
            Arc::new(Int32Array::from_iter_values(keys.iter().map(|k| k.site))),
            strings(|k| &k.compound),
            Arc::new(Float64Array::from_iter_values(
                keys.iter().map(|k| k.concentration),
            )),
            moa,
            strings(|k| &k.batch),
            Arc::new(Int32Array::from_iter_values(
                keys.iter().map(|k| k.object_number),
            )),
            floats(|k| k.center_x),
            floats(|k| k.center_y),
            Arc::new(pixels),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
            .expect("cells columns match the cells schema")
    }
}

/// Borrowed access to the pixels of a `cells` batch: one `[C,H,W]` slice per row.
#[derive(Debug)]
pub struct CellPixels<'a> {
    values: &'a [u16],
    shape: TensorShape,
}

impl<'a> CellPixels<'a> {
    /// Finds the pixel column of `batch` and checks its shape.
    pub fn from_batch(batch: &'a RecordBatch, path: &Path) -> Result<Self, SchemaError> {
        let schema = batch.schema_ref();
        let index = schema
            .index_of(PIXELS_COLUMN)
            .map_err(|_| SchemaError::MissingColumn {
                path: path.to_path_buf(),
                table: TableKind::Cells.name(),
                column: PIXELS_COLUMN.to_string(),
            })?;
        let shape = TensorShape::from_field(schema.field(index), path)?;
        let list = batch
            .column(index)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .expect("validated as a fixed-size list");
        let values = list
            .values()
            .as_any()
            .downcast_ref::<UInt16Array>()
            .expect("validated as uint16");
        let start = list.offset() * shape.len();
        let values = &values.values()[start..start + list.len() * shape.len()];
        Ok(Self { values, shape })
    }

    pub fn shape(&self) -> TensorShape {
        self.shape
    }

    pub fn n_cells(&self) -> usize {
        self.values.len() / self.shape.len().max(1)
    }

    /// The `[C,H,W]` pixels of row `row`.
    pub fn cell(&self, row: usize) -> &'a [u16] {
        &self.values[row * self.shape.len()..(row + 1) * self.shape.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{read_table, ParquetTableWriter, Provenance};

    fn keys(object_number: i32) -> CellKeys {
        CellKeys {
            plate: "Week1_22123".into(),
            well: "B02".into(),
            site: 1,
            compound: "DMSO".into(),
            concentration: 0.0,
            moa: Some("DMSO".into()),
            batch: "Week1".into(),
            object_number,
            center_x: Some(10.5),
            center_y: None,
        }
    }

    #[test]
    fn cells_round_trip_through_parquet() {
        let shape = TensorShape::new(2, 3, 4);
        let mut builder = CellsBatchBuilder::new(shape);
        let first: Vec<u16> = (0..24).collect();
        let second: Vec<u16> = (100..124).collect();
        builder.push(keys(1), &first);
        builder.push(keys(2), &second);
        let batch = builder.finish();
        assert!(builder.is_empty());

        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("cells.parquet");
        let provenance = Provenance::new(TableKind::Cells, "pf-test", "0", serde_json::json!({}));
        let mut writer =
            ParquetTableWriter::create(&path, TableKind::Cells, batch.schema(), &provenance, 16)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();

        let batches = read_table(&path, TableKind::Cells).unwrap();
        let pixels = CellPixels::from_batch(&batches[0], &path).unwrap();
        assert_eq!(pixels.shape(), shape);
        assert_eq!(pixels.n_cells(), 2);
        assert_eq!(pixels.cell(1), &second[..]);
        let center_y = batches[0].column(9);
        assert_eq!(center_y.null_count(), 2);
    }
}
