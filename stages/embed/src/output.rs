//! The `embeddings` table pf-embed writes: the cells' `Metadata_*` columns, one feature column per
//! latent dimension (μ, and log σ / γ when asked for), the plates kept, written as it is
//! computed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BooleanArray, Float32Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use indicatif::ProgressBar;
use phenoflow_schemas::tables::METADATA_PREFIX;
use phenoflow_schemas::{InputError, ModelCard, ParquetTableWriter, Provenance, TableKind};

use crate::args::Cli;

/// The `Metadata_*` columns of the cells table, in its order.
pub(crate) fn metadata_indices(schema: &Schema) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, field)| field.name().starts_with(METADATA_PREFIX))
        .map(|(index, _)| index)
        .collect()
}

/// The rows of `batch` whose `Metadata_Plate` is in `plates` (every row when `None`).
pub(crate) fn keep_plates(
    batch: RecordBatch,
    plates: Option<&BTreeSet<String>>,
) -> anyhow::Result<RecordBatch> {
    let Some(plates) = plates else {
        return Ok(batch);
    };
    let column = batch
        .column_by_name(phenoflow_schemas::columns::PLATE)
        .expect("validated");
    let mask: BooleanArray = column
        .as_string::<i32>()
        .iter()
        .map(|plate| Some(plate.is_some_and(|plate| plates.contains(plate))))
        .collect();
    Ok(arrow_select::filter::filter_record_batch(&batch, &mask)?)
}

/// The output table's schema: the input's `Metadata_*` fields, then float32 features.
pub(crate) fn output_schema(
    schema: &Schema,
    metadata_columns: &[usize],
    feature_names: &[String],
) -> SchemaRef {
    let mut fields: Vec<Field> = metadata_columns
        .iter()
        .map(|&index| schema.field(index).clone())
        .collect();
    fields.extend(
        feature_names
            .iter()
            .map(|name| Field::new(name, DataType::Float32, false)),
    );
    Arc::new(Schema::new(fields))
}

/// The embeddings writer and a progress bar over `total` cells (hidden with --no-progress).
pub(crate) fn start_output(
    cli: &Cli,
    schema: SchemaRef,
    provenance: &Provenance,
    total: usize,
    what: &str,
) -> anyhow::Result<(ParquetTableWriter, ProgressBar)> {
    let writer = ParquetTableWriter::create(
        &cli.output,
        TableKind::Embeddings,
        schema,
        provenance,
        65_536,
    )?;
    let progress = phenoflow_kit::progress_bar(total, what, "cells", cli.progress.no_progress);
    Ok((writer, progress))
}

/// The `[C, H, W]` of one cell of a cells table, from its pixel column.
pub(crate) fn pixel_shape(
    schema: &Schema,
    path: &Path,
) -> anyhow::Result<phenoflow_schemas::TensorShape> {
    let field = schema
        .field_with_name(phenoflow_schemas::PIXELS_COLUMN)
        .map_err(|_| InputError(format!("{}: no pixel column", path.display())))?;
    Ok(phenoflow_schemas::TensorShape::from_field(field, path)?)
}

/// Feature column names: `<prefix>_<Model>_<kind>000`…
pub(crate) fn column_names(
    prefix: &str,
    model: &str,
    kind: &str,
    latent_dim: usize,
) -> Vec<String> {
    let width = latent_dim.saturating_sub(1).to_string().len().max(3);
    (0..latent_dim)
        .map(|dim| format!("{prefix}_{model}_{kind}{dim:0width$}"))
        .collect()
}

/// Splits a row-major `[n, L]` block into L float columns.
pub(crate) fn columns_of(values: &[f32], n_rows: usize, latent_dim: usize) -> Vec<ArrayRef> {
    (0..latent_dim)
        .map(|dim| {
            Arc::new(Float32Array::from_iter_values(
                (0..n_rows).map(|row| values[row * latent_dim + dim]),
            )) as ArrayRef
        })
        .collect()
}

/// The output table's columns: the cells' metadata, then the profile (and log σ, γ when asked).
pub(crate) struct OutputLayout {
    pub(crate) metadata_columns: Vec<usize>,
    pub(crate) schema: SchemaRef,
}

impl OutputLayout {
    /// Checks the cells fit the encoder (C, H, W) and names the output's columns.
    pub(crate) fn of(
        cli: &Cli,
        schema: &SchemaRef,
        card: &ModelCard,
        encoder: &Path,
    ) -> anyhow::Result<Self> {
        let shape = pixel_shape(schema, &cli.cells)?;
        let cells_shape = [
            shape.channels as i64,
            shape.height as i64,
            shape.width as i64,
        ];
        if cells_shape != card.input_shape {
            return Err(InputError(format!(
                "{}: cells are {:?} (C, H, W) but the encoder {} takes {:?}",
                cli.cells.display(),
                cells_shape,
                encoder.display(),
                card.input_shape
            ))
            .into());
        }
        let latent_dim = card.hyperparameters.latent_dim as usize;
        let model_name = card.model.display_name();
        let metadata_columns = metadata_indices(schema);
        let mut feature_names = column_names("Cells", model_name, "z", latent_dim);
        if cli.with_log_sigma {
            feature_names.extend(column_names(
                "Posterior",
                model_name,
                "logsigma",
                latent_dim,
            ));
        }
        if cli.with_gamma {
            feature_names.extend(column_names("Posterior", model_name, "gamma", latent_dim));
        }
        let schema = output_schema(schema, &metadata_columns, &feature_names);
        Ok(Self {
            metadata_columns,
            schema,
        })
    }
}
