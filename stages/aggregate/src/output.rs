//! Writing the `wells` and `treatments` tables through the contract, with their provenance.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, StringArray};
use arrow_schema::{DataType, Field, Schema};
use phenoflow_schemas::{write_table_at_once, Provenance, TableKind};

use crate::args::Cli;
use crate::input_error;
use crate::settings;
use crate::settings::{Found, Params};
use crate::treatments::Treatments;
use crate::wells::Wells;
use crate::Hasher;

pub(crate) fn feature_fields(names: &[String]) -> Vec<Field> {
    names
        .iter()
        .map(|name| Field::new(name, DataType::Float64, false))
        .collect()
}

pub(crate) fn feature_arrays(names: &[String], rows: &[Vec<f64>]) -> Vec<ArrayRef> {
    (0..names.len())
        .map(|f| {
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|row| row[f]),
            )) as ArrayRef
        })
        .collect()
}

pub(crate) fn write_table(
    path: &Path,
    kind: TableKind,
    mut columns: Vec<ArrayRef>,
    feature_names: &[String],
    features: &[Vec<f64>],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let mut fields = kind.required_fields(None);
    fields.extend(feature_fields(feature_names));
    columns.extend(feature_arrays(feature_names, features));
    let schema = Arc::new(Schema::new(fields));
    Ok(write_table_at_once(
        path, kind, schema, columns, provenance,
    )?)
}

pub(crate) fn string_array<T: AsRef<str>>(values: &[T]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        values.iter().map(AsRef::as_ref),
    ))
}

/// The provenance of both tables, with the inputs' hashes; two inputs with the same content (a
/// shard copied under another name) would count every cell twice and are refused.
pub(crate) fn provenance(
    cli: &Cli,
    params: &Params,
    found: &Found,
    hasher: Hasher,
) -> anyhow::Result<Provenance> {
    let mut provenance = Provenance::new(
        TableKind::Wells,
        "pf-aggregate",
        env!("CARGO_PKG_VERSION"),
        settings::provenance_params(params, found),
    );
    let hashes = hasher
        .join()
        .map_err(|_| anyhow::anyhow!("the input-hashing thread panicked"))??;
    let inputs = &hashes[..cli.input.len()];
    for (index, (path, hash)) in inputs.iter().enumerate() {
        if let Some((other, _)) = inputs[..index].iter().find(|(_, other)| other == hash) {
            return Err(input_error(format!(
                "{path} and {other} have the same content: every cell would count twice"
            )));
        }
    }
    provenance.inputs.extend(hashes);
    Ok(provenance)
}

pub(crate) fn write_wells(
    path: &Path,
    wells: &Wells,
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let columns: Vec<ArrayRef> = vec![
        string_array(&wells.plate),
        string_array(&wells.well),
        string_array(&wells.compound),
        Arc::new(Float64Array::from(wells.concentration.clone())),
        Arc::new(StringArray::from_iter(
            wells.moa.iter().map(|m| m.as_deref()),
        )),
        string_array(&wells.batch),
        Arc::new(Int64Array::from(wells.count.clone())),
    ];
    write_table(
        path,
        TableKind::Wells,
        columns,
        &wells.feature_names,
        &wells.features,
        provenance,
    )
}

pub(crate) fn write_treatments(
    path: &Path,
    treatments: &Treatments,
    feature_names: &[String],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let columns: Vec<ArrayRef> = vec![
        string_array(&treatments.compound),
        Arc::new(Float64Array::from(treatments.concentration.clone())),
        Arc::new(StringArray::from_iter(
            treatments.moa.iter().map(|m| m.as_deref()),
        )),
        Arc::new(StringArray::from_iter(
            treatments.batches.iter().map(|b| Some(b.as_str())),
        )),
        Arc::new(Int64Array::from(treatments.count.clone())),
    ];
    write_table(
        path,
        TableKind::Treatments,
        columns,
        feature_names,
        &treatments.features,
        provenance,
    )
}
