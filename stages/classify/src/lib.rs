//! `pf-classify`: MoA prediction by 1-nearest neighbour over treatment profiles, with the NSC and
//! NSCB hold-outs, under the standard protocol (DMSO excluded: 103 treatments, 12 MoAs for
//! BBBC021) or the seed-compatible one (DMSO as query and candidate: 104 treatments, 13 classes),
//! plus per-MoA recall, confusion counts and MoA retrieval mean average precision.

pub mod args;
pub mod knn;
pub mod summary;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, StringArray,
};
use arrow_schema::{DataType, Schema};
use phenoflow_schemas::{
    write_table_at_once, InputError, ParquetTableReader, Provenance, TableKind,
};

use crate::args::{Cli, Command, Protocol};
use crate::knn::{
    distance_matrix, evaluate, mean_average_precision, Evaluation, HoldOut, Treatment,
};

/// Reads a `treatments` table: keys, batches (`;`-separated) and every feature column, sorted by
/// (compound, concentration).
pub fn read_treatments(path: &Path, batch_column: &str) -> anyhow::Result<Vec<Treatment>> {
    let reader = ParquetTableReader::open(path, TableKind::Treatments, 8192, None)?;
    let schema = reader.schema().clone();
    if schema.index_of(batch_column).is_err() {
        return Err(InputError(format!(
            "{}: batch column `{batch_column}` does not exist",
            path.display()
        ))
        .into());
    }
    let feature_names: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| {
            !f.name().starts_with(phenoflow_schemas::columns::PREFIX)
                && matches!(f.data_type(), DataType::Float32 | DataType::Float64)
        })
        .map(|f| f.name().clone())
        .collect();
    let mut treatments = Vec::new();
    let mut first_row = 0usize;
    for batch in reader {
        let batch = batch?;
        let strings = |name: &str| -> anyhow::Result<Vec<Option<String>>> {
            let column = batch.column_by_name(name).expect("validated column");
            let cast = arrow_string_values(column.as_ref()).ok_or_else(|| {
                InputError(format!(
                    "{}: column `{name}` is not a string column",
                    path.display()
                ))
            })?;
            Ok(cast)
        };
        let compounds = strings(phenoflow_schemas::columns::COMPOUND)?;
        let moas = strings(phenoflow_schemas::columns::MOA)?;
        let batches = strings(batch_column)?;
        let concentrations = batch
            .column_by_name(phenoflow_schemas::columns::CONCENTRATION)
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>().cloned())
            .expect("validated Float64 column");
        let features: Vec<Vec<f64>> = feature_names
            .iter()
            .map(|name| float_values(batch.column_by_name(name).expect("feature column").as_ref()))
            .collect();
        for row in 0..batch.num_rows() {
            let compound = compounds[row].clone().expect("validated non-null");
            let moa = moas[row].clone().ok_or_else(|| {
                InputError(format!(
                    "{}: row {}: treatment ({compound}, {}) has no MoA (Metadata_MoA is null)",
                    path.display(),
                    first_row + row,
                    concentrations.value(row)
                ))
            })?;
            treatments.push(Treatment {
                compound,
                concentration: concentrations.value(row),
                moa,
                batches: batches[row]
                    .as_deref()
                    .unwrap_or("")
                    .split(';')
                    .filter(|b| !b.is_empty())
                    .map(String::from)
                    .collect(),
                features: features.iter().map(|column| column[row]).collect(),
            });
        }
        first_row += batch.num_rows();
    }
    if treatments.is_empty() {
        return Err(InputError(format!("{}: no treatments", path.display())).into());
    }
    treatments.sort_by(|a, b| {
        a.compound
            .cmp(&b.compound)
            .then(a.concentration.total_cmp(&b.concentration))
    });
    for pair in treatments.windows(2) {
        if pair[0].compound == pair[1].compound && pair[0].concentration == pair[1].concentration {
            return Err(InputError(format!(
                "{}: treatment ({}, {}) appears twice",
                path.display(),
                pair[0].compound,
                pair[0].concentration
            ))
            .into());
        }
    }
    Ok(treatments)
}

pub(crate) fn arrow_string_values(array: &dyn Array) -> Option<Vec<Option<String>>> {
    if let Some(strings) = array.as_any().downcast_ref::<StringArray>() {
        return Some(strings.iter().map(|v| v.map(String::from)).collect());
    }
    if let Some(strings) = array
        .as_any()
        .downcast_ref::<arrow_array::LargeStringArray>()
    {
        return Some(strings.iter().map(|v| v.map(String::from)).collect());
    }
    array
        .as_any()
        .downcast_ref::<arrow_array::StringViewArray>()
        .map(|strings| strings.iter().map(|v| v.map(String::from)).collect())
}

fn float_values(array: &dyn Array) -> Vec<f64> {
    if let Some(values) = array.as_any().downcast_ref::<Float32Array>() {
        return values
            .iter()
            .map(|v| f64::from(v.unwrap_or(f32::NAN)))
            .collect();
    }
    let values = array
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("validated float feature");
    values.iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

/// One evaluated protocol, named as in the outputs.
struct Scored {
    name: &'static str,
    evaluation: Evaluation,
    /// Denominator of the "all queries" accuracy (NSCB-103).
    n_queries: usize,
}

/// Runs the stage: scores treatments, or summarises replicate runs (`summarize`).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(Command::Summarize(args)) = &cli.command {
        return summary::run(args);
    }
    let required = |value: &Option<PathBuf>, flag: &str| {
        value
            .clone()
            .ok_or_else(|| InputError(format!("{flag} is required")))
    };
    let (treatments_path, predictions_path, metrics_path) = (
        required(&cli.treatments, "--treatments")?,
        required(&cli.predictions, "--predictions")?,
        required(&cli.metrics, "--metrics")?,
    );
    phenoflow_schemas::check_outputs_are_not_inputs(
        &[
            ("--predictions", &predictions_path),
            ("--metrics", &metrics_path),
        ],
        &[&treatments_path],
    )?;
    let treatments = read_treatments(&treatments_path, &cli.batch_column)?;
    let distances = distance_matrix(&treatments, cli.metric);
    let (members, runs) = queries_and_protocols(&cli, &treatments, &treatments_path);
    let scored: Vec<Scored> = runs
        .into_iter()
        .map(|(name, hold_out)| Scored {
            name,
            evaluation: evaluate(&treatments, &distances, &members, hold_out),
            n_queries: members.len(),
        })
        .collect();
    let (map, map_per_moa, map_queries) = mean_average_precision(&treatments, &distances, &members);
    let params = Params {
        metric: cli.metric,
        protocol: cli.protocol,
        control: &cli.control,
        batch_column: &cli.batch_column,
    };
    let provenance = phenoflow_kit::provenance(
        TableKind::Predictions,
        "pf-classify",
        env!("CARGO_PKG_VERSION"),
        &params,
        &[treatments_path.as_path()],
    )?;
    write_predictions(&predictions_path, &treatments, &scored, &provenance)?;
    let mut metrics_provenance = provenance.clone();
    metrics_provenance.table = TableKind::Metrics;
    write_metrics(
        &metrics_path,
        &treatments,
        &scored,
        (map, &map_per_moa, map_queries),
        &metrics_provenance,
    )?;
    print_summary(&cli, &treatments, &members, &scored, map, map_queries);
    Ok(())
}

/// What changes the outputs, recorded as their provenance params.
#[derive(Debug, serde::Serialize)]
struct Params<'a> {
    metric: crate::knn::Metric,
    protocol: Protocol,
    control: &'a str,
    batch_column: &'a str,
}

/// The treatments that are queries (and candidates) and the hold-outs they are scored under:
/// the standard protocol leaves the control out and scores NSC and NSCB; the seed-compatible one
/// keeps every treatment and scores NSC only.
fn queries_and_protocols(
    cli: &Cli,
    treatments: &[Treatment],
    treatments_path: &Path,
) -> (Vec<usize>, Vec<(&'static str, HoldOut)>) {
    let (members, runs): (Vec<usize>, Vec<(&'static str, HoldOut)>) = match cli.protocol {
        Protocol::Standard => (
            (0..treatments.len())
                .filter(|&i| {
                    treatments[i].moa != cli.control && treatments[i].compound != cli.control
                })
                .collect(),
            vec![
                ("NSC", HoldOut::NotSameCompound),
                ("NSCB", HoldOut::NotSameCompoundOrBatch),
            ],
        ),
        Protocol::SeedCompatible => (
            (0..treatments.len()).collect(),
            vec![("NSC-seed", HoldOut::NotSameCompound)],
        ),
    };
    if members.is_empty() {
        // A screen of controls only (the project's one-well fixture, say): nothing to score,
        // which every protocol reports as n/a, as it does when no query is scorable.
        eprintln!(
            "pf-classify: {}: no treatment other than the control `{}`: nothing to score",
            treatments_path.display(),
            cli.control
        );
    }
    (members, runs)
}

/// The accuracies on standard output, n/a where nothing was scorable.
fn print_summary(
    cli: &Cli,
    treatments: &[Treatment],
    members: &[usize],
    scored: &[Scored],
    map: f64,
    map_queries: usize,
) {
    let moas: BTreeSet<&str> = members
        .iter()
        .map(|&i| treatments[i].moa.as_str())
        .collect();
    println!(
        "pf-classify: {} treatments, {} MoAs, {:?} distance, {:?} protocol",
        members.len(),
        moas.len(),
        cli.metric,
        cli.protocol
    );
    for run in scored {
        let evaluation = &run.evaluation;
        if evaluation.predictions.is_empty() {
            println!(
                "  {:<9} accuracy n/a (no scorable query: no MoA has treatments of two compounds{})",
                run.name,
                if run.name.starts_with("NSCB") {
                    " in different batches"
                } else {
                    ""
                }
            );
            continue;
        }
        println!(
            "  {:<9} accuracy {:.3} ({}/{})",
            run.name,
            evaluation.accuracy(),
            evaluation.n_correct(),
            evaluation.predictions.len()
        );
        if evaluation.n_dropped > 0 {
            println!(
                "  {:<9} accuracy {:.3} ({}/{}, the {} treatments of unscorable MoAs counted wrong)",
                format!("{}-{}", run.name, run.n_queries),
                evaluation.n_correct() as f64 / run.n_queries as f64,
                evaluation.n_correct(),
                run.n_queries,
                evaluation.n_dropped
            );
        }
    }
    if map_queries == 0 {
        println!("  mAP (MoA retrieval, NSC candidates) n/a (no query has a same-MoA candidate)");
    } else {
        println!("  mAP (MoA retrieval, NSC candidates) {map:.3} over {map_queries} queries");
    }
}

fn write_predictions(
    path: &Path,
    treatments: &[Treatment],
    scored: &[Scored],
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let rows: Vec<(&str, &knn::Prediction)> = scored
        .iter()
        .flat_map(|run| {
            run.evaluation
                .predictions
                .iter()
                .map(move |p| (run.name, p))
        })
        .collect();
    let strings = |get: &dyn Fn(&(&str, &knn::Prediction)) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(get)))
    };
    let floats = |get: &dyn Fn(&(&str, &knn::Prediction)) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(get)))
    };
    let batch_text = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(";");
    let columns: Vec<ArrayRef> = vec![
        strings(&|(_, p)| treatments[p.query].compound.clone()),
        floats(&|(_, p)| treatments[p.query].concentration),
        strings(&|(_, p)| treatments[p.query].moa.clone()),
        strings(&|(_, p)| batch_text(&treatments[p.query].batches)),
        strings(&|(name, _)| name.to_string()),
        strings(&|(_, p)| treatments[p.nearest].compound.clone()),
        floats(&|(_, p)| treatments[p.nearest].concentration),
        strings(&|(_, p)| treatments[p.nearest].moa.clone()),
        floats(&|(_, p)| p.distance),
        Arc::new(BooleanArray::from(
            rows.iter().map(|(_, p)| p.correct).collect::<Vec<_>>(),
        )),
    ];
    let schema = Arc::new(Schema::new(TableKind::Predictions.required_fields(None)));
    Ok(write_table_at_once(
        path,
        TableKind::Predictions,
        schema,
        columns,
        provenance,
    )?)
}

type MapResult<'a> = (f64, &'a BTreeMap<String, f64>, usize);

fn write_metrics(
    path: &Path,
    treatments: &[Treatment],
    scored: &[Scored],
    map: MapResult<'_>,
    provenance: &Provenance,
) -> anyhow::Result<()> {
    let mut rows: Vec<(String, String, String, f64, Option<i64>)> = Vec::new();
    // A protocol with no scorable query has no accuracy: its rows are left out (never 0.000).
    for run in scored
        .iter()
        .filter(|run| !run.evaluation.predictions.is_empty())
    {
        let evaluation = &run.evaluation;
        let n = evaluation.predictions.len();
        rows.push((
            "accuracy".into(),
            run.name.into(),
            "all".into(),
            evaluation.accuracy(),
            Some(n as i64),
        ));
        if evaluation.n_dropped > 0 {
            rows.push((
                "accuracy".into(),
                format!("{}-{}", run.name, run.n_queries),
                "all".into(),
                evaluation.n_correct() as f64 / run.n_queries as f64,
                Some(run.n_queries as i64),
            ));
        }
        let mut per_moa: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        let mut confusion: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for prediction in &evaluation.predictions {
            let truth = treatments[prediction.query].moa.as_str();
            let entry = per_moa.entry(truth).or_default();
            entry.0 += usize::from(prediction.correct);
            entry.1 += 1;
            *confusion
                .entry((truth, treatments[prediction.nearest].moa.as_str()))
                .or_default() += 1;
        }
        for (moa, (correct, total)) in per_moa {
            rows.push((
                "recall".into(),
                run.name.into(),
                moa.into(),
                correct as f64 / total as f64,
                Some(total as i64),
            ));
        }
        for ((truth, predicted), count) in confusion {
            rows.push((
                "confusion".into(),
                run.name.into(),
                format!("{truth}→{predicted}"),
                count as f64,
                Some(count as i64),
            ));
        }
    }
    let (map_all, map_per_moa, map_queries) = map;
    if map_queries > 0 {
        rows.push((
            "mean_average_precision".into(),
            "NSC".into(),
            "all".into(),
            map_all,
            Some(map_queries as i64),
        ));
    }
    for (moa, value) in map_per_moa {
        rows.push((
            "mean_average_precision".into(),
            "NSC".into(),
            moa.clone(),
            *value,
            None,
        ));
    }
    let schema = Arc::new(Schema::new(TableKind::Metrics.required_fields(None)));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.1.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.2.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.3))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.4))),
    ];
    Ok(write_table_at_once(
        path,
        TableKind::Metrics,
        schema,
        columns,
        provenance,
    )?)
}
