//! `pf-cellprofiler`: a CellProfiler screen's single-cell measurements, as CellProfiler wrote them
//! (ExportToSpreadsheet CSVs, the ExportToDatabase SQLite backend, or CytoTable's Parquet), merged
//! into the `single_cells` table: one row per cell, its cytoplasm joined to its cell and nucleus,
//! features prefixed by compartment, the image's metadata as `Metadata_*`. Read image by image,
//! so memory stays flat in the input's size; written atomically.

pub mod args;
pub mod csvsrc;
pub mod cytotable;
pub mod merge;
pub mod source;
pub mod sqlite;

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use phenoflow_schemas::{
    check_outputs_are_not_inputs, hash_file, InputError, ParquetTableWriter, Provenance, TableKind,
};

use crate::args::Cli;
use crate::merge::{MetadataPlan, Summary};
use crate::source::{Compartment, GroupSource, ImageTable};

pub(crate) fn input_error(message: String) -> anyhow::Error {
    InputError(message).into()
}

/// A measurement as CellProfiler writes it: a number, or empty / `nan` / `inf` for one it could not
/// make (NaN here, a null in the table). `None` for text that is no number.
pub(crate) fn parse_measurement(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty() {
        return Some(f64::NAN);
    }
    text.parse::<f64>()
        .ok()
        .map(|value| if value.is_finite() { value } else { f64::NAN })
}

/// A value quoted in a message, cut at 40 characters.
pub(crate) fn shorten(text: &str) -> String {
    let mut shown: String = text.chars().take(40).collect();
    if text.chars().count() > 40 {
        shown.push('…');
    }
    shown
}

/// Rows per Parquet row group: about 64 MiB of feature values, at least 1,024 rows.
fn rows_per_group(n_features: usize) -> usize {
    ((64 << 20) / (8 * n_features.max(1))).clamp(1024, 65_536)
}

fn progress_bar(cli: &Cli, images: usize) -> ProgressBar {
    phenoflow_kit::progress_bar(images, "merging", "images", cli.progress.no_progress)
}

/// What changes the merged table: recorded as its provenance params.
#[derive(Debug, serde::Serialize)]
struct Params<'a> {
    /// `sqlite`, `csv` or `cytotable`.
    source: &'static str,
    table_prefix: Option<&'a str>,
    csv_prefix: Option<&'a str>,
    plate_column: &'a str,
    well_column: &'a str,
}

fn params(cli: &Cli, source: &'static str) -> serde_json::Value {
    let params = Params {
        source,
        table_prefix: cli.sqlite.is_some().then_some(cli.table_prefix.as_str()),
        csv_prefix: cli.csv_dir.is_some().then_some(cli.csv_prefix.as_str()),
        plate_column: &cli.plate_column,
        well_column: &cli.well_column,
    };
    serde_json::to_value(params).expect("strings and options are JSON")
}

/// Writes the merged rows of one CSV or SQLite screen.
fn write_merged(
    cli: &Cli,
    images: &ImageTable,
    sources: [&mut dyn GroupSource; 3],
    provenance: &Provenance,
) -> anyhow::Result<Summary> {
    let plan = MetadataPlan::new(images, &cli.plate_column, &cli.well_column)?;
    let features: Vec<String> = sources
        .iter()
        .flat_map(|source| source.features().to_vec())
        .collect();
    let names: Vec<&str> = sources.iter().map(|source| source.source()).collect();
    let schema = merge::output_schema(&plan, &features, &names.join(", "))?;
    let rows = rows_per_group(features.len());
    let mut writer = ParquetTableWriter::create(
        &cli.output,
        TableKind::SingleCells,
        schema.clone(),
        provenance,
        rows,
    )?;
    let progress = progress_bar(cli, images.rows.len());
    let summary = merge::merge(
        images,
        &plan,
        sources,
        &mut writer,
        &schema,
        rows,
        &progress,
    )?;
    progress.finish_and_clear();
    if summary.cells == 0 {
        return Err(input_error(format!(
            "{}: no cells (no image has cytoplasm objects)",
            images.source
        )));
    }
    for (key, value) in summary_extras(&summary) {
        writer.append_extra(key, &value);
    }
    writer.finish()?;
    Ok(summary)
}

fn summary_extras(summary: &Summary) -> Vec<(&'static str, String)> {
    vec![
        ("images", summary.images.to_string()),
        (
            "images_without_cells",
            summary.images_without_cells.to_string(),
        ),
        ("cells", summary.cells.to_string()),
        ("unlinked_nuclei", summary.unlinked_nuclei.to_string()),
        ("missing_values", summary.missing_values.to_string()),
        ("features", summary.features.to_string()),
    ]
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let inputs: Vec<PathBuf> = if let Some(path) = &cli.sqlite {
        vec![path.clone()]
    } else if let Some(dir) = &cli.csv_dir {
        if !cli.csv_prefix.is_empty() && !phenoflow_schemas::is_plain_file_name(&cli.csv_prefix) {
            return Err(input_error(format!(
                "--csv-prefix `{}` is not a plain file-name fragment (no `/`, no `..`)",
                shorten(&cli.csv_prefix)
            )));
        }
        ["Image", "Cells", "Cytoplasm", "Nuclei"]
            .iter()
            .map(|name| csvsrc::csv_path(dir, &cli.csv_prefix, name))
            .collect()
    } else {
        vec![cli.cytotable.clone().expect("clap requires one source")]
    };
    let input_refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    check_outputs_are_not_inputs(&[("--output", cli.output.as_path())], &input_refs)?;
    let source = if cli.sqlite.is_some() {
        "sqlite"
    } else if cli.csv_dir.is_some() {
        "csv"
    } else {
        "cytotable"
    };
    let mut provenance = Provenance::new(
        TableKind::SingleCells,
        "pf-cellprofiler",
        env!("CARGO_PKG_VERSION"),
        params(&cli, source),
    );
    let summary = if let Some(path) = &cli.sqlite {
        let connection = sqlite::open(path, cli.busy_timeout_ms)?;
        let images = sqlite::read_images(&connection, path, &cli.table_prefix)?;
        let mut queries = Compartment::ALL
            .iter()
            .map(|&compartment| {
                sqlite::CompartmentQuery::prepare(&connection, path, &cli.table_prefix, compartment)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        record_input(&mut provenance, path)?;
        let [cells, cytoplasm, nuclei] = &mut queries[..] else {
            unreachable!("three compartments")
        };
        let mut cells = cells.run(path)?;
        let mut cytoplasm = cytoplasm.run(path)?;
        let mut nuclei = nuclei.run(path)?;
        write_merged(
            &cli,
            &images,
            [&mut cells, &mut cytoplasm, &mut nuclei],
            &provenance,
        )?
    } else if cli.csv_dir.is_some() {
        let images = csvsrc::read_images(&inputs[0])?;
        let mut cells = csvsrc::CsvGroups::open(&inputs[1], Compartment::Cells)?;
        let mut cytoplasm = csvsrc::CsvGroups::open(&inputs[2], Compartment::Cytoplasm)?;
        let mut nuclei = csvsrc::CsvGroups::open(&inputs[3], Compartment::Nuclei)?;
        for path in &inputs {
            record_input(&mut provenance, path)?;
        }
        write_merged(
            &cli,
            &images,
            [&mut cells, &mut cytoplasm, &mut nuclei],
            &provenance,
        )?
    } else {
        record_input(&mut provenance, &inputs[0])?;
        cytotable::convert(&cli, &inputs[0], &provenance)?
    };
    eprintln!(
        "pf-cellprofiler: {} cells from {} images ({} without cells), {} features{}{} → {}",
        summary.cells,
        summary.images,
        summary.images_without_cells,
        summary.features,
        if summary.unlinked_nuclei > 0 {
            format!(
                "; {} nuclei no cytoplasm names left out (as pycytominer's merge does)",
                summary.unlinked_nuclei
            )
        } else {
            String::new()
        },
        if summary.missing_values > 0 {
            format!(
                "; {} missing measurements (empty, NaN or infinite) written as null",
                summary.missing_values
            )
        } else {
            String::new()
        },
        cli.output.display()
    );
    Ok(())
}

fn record_input(provenance: &mut Provenance, path: &Path) -> anyhow::Result<()> {
    provenance
        .inputs
        .insert(path.display().to_string(), hash_file(path)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measurements_cellprofiler_could_not_make_are_missing_and_text_is_refused() {
        assert_eq!(parse_measurement(" 2.5 "), Some(2.5));
        for missing in ["", "nan", "NaN", "inf", "-inf"] {
            assert!(parse_measurement(missing).unwrap().is_nan(), "{missing}");
        }
        assert_eq!(parse_measurement("n/a"), None);
    }

    #[test]
    fn row_groups_hold_about_64_mib_of_features() {
        assert_eq!(rows_per_group(1189), 7055);
        assert_eq!(rows_per_group(1), 65_536);
        assert_eq!(rows_per_group(100_000), 1024);
    }
}
