//! `--platemap`: pycytominer's `annotate` step. A table that names each well's compound and
//! concentration by plate and well (a plate map, or an image table such as
//! `BBBC021_v1_image.csv` with one row per field) is joined onto the well profiles, so a
//! CellProfiler export keyed by plate and well only runs straight through. As in pycytominer,
//! the join happens after cells are aggregated to wells (on the small well table); unlike its
//! left merge, a well the plate map does not name is an error, and so is a well it names with
//! two treatments.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::{
    col, Column, DataFrame, DataType as PlDataType, IntoLazy, JoinArgs, JoinType, LazyFrame,
};

use crate::args::Cli;
use crate::input::ColumnMap;
use crate::input_error;

/// The columns looked for, in order, when a `--platemap-*-column` is not given.
const PLATE_COLUMNS: &[&str] = &[
    phenoflow_schemas::columns::PLATE,
    "Image_Metadata_Plate",
    "Image_Metadata_Plate_DAPI",
    "Plate",
];
const WELL_COLUMNS: &[&str] = &[
    phenoflow_schemas::columns::WELL,
    phenoflow_schemas::columns::WELL_POSITION,
    "Image_Metadata_Well",
    "Image_Metadata_Well_DAPI",
    "Well",
    "well_position",
];
const COMPOUND_COLUMNS: &[&str] = &[
    phenoflow_schemas::columns::COMPOUND,
    "Image_Metadata_Compound",
    "Compound",
];
const CONCENTRATION_COLUMNS: &[&str] = &[
    phenoflow_schemas::columns::CONCENTRATION,
    "Image_Metadata_Concentration",
    "Concentration",
];

/// Each annotated well's treatment, keyed by the input's plate and well column names.
#[derive(Debug, Clone)]
pub struct PlateMap {
    pub path: PathBuf,
    /// Plate-map column → the input column it fills (plate, well, compound, concentration).
    pub columns: [(String, String); 4],
    /// One row per well: plate and well (text) and its compound and concentration, named as the
    /// input's columns (`--plate-column`, …).
    pub frame: DataFrame,
}

fn pick(
    schema: &polars::prelude::Schema,
    path: &Path,
    given: Option<&str>,
    candidates: &[&str],
    flag: &str,
) -> anyhow::Result<String> {
    match given {
        Some(name) if schema.contains(name) => Ok(name.to_string()),
        Some(name) => Err(input_error(format!(
            "{}: no column `{name}` ({flag}); columns: {}",
            path.display(),
            crate::input::column_names(schema)
        ))),
        None => candidates
            .iter()
            .find(|name| schema.contains(name))
            .map(|name| name.to_string())
            .ok_or_else(|| {
                input_error(format!(
                    "{}: none of the columns {} (name it with {flag}); columns: {}",
                    path.display(),
                    candidates.join(", "),
                    crate::input::column_names(schema)
                ))
            }),
    }
}

impl PlateMap {
    /// Reads `--platemap`, if given: one treatment per (plate, well), checked.
    pub fn read(cli: &Cli) -> anyhow::Result<Option<Self>> {
        let Some(path) = &cli.platemap else {
            return Ok(None);
        };
        crate::input::check_input_file(path)?;
        let mut frame = crate::input::scan_one(path)?;
        let schema = frame.collect_schema().map_err(|error| {
            input_error(format!(
                "{}: cannot read the columns: {error}",
                path.display()
            ))
        })?;
        let sources = [
            pick(
                &schema,
                path,
                cli.platemap_plate_column.as_deref(),
                PLATE_COLUMNS,
                "--platemap-plate-column",
            )?,
            pick(
                &schema,
                path,
                cli.platemap_well_column.as_deref(),
                WELL_COLUMNS,
                "--platemap-well-column",
            )?,
            pick(
                &schema,
                path,
                cli.platemap_compound_column.as_deref(),
                COMPOUND_COLUMNS,
                "--platemap-compound-column",
            )?,
            pick(
                &schema,
                path,
                cli.platemap_concentration_column.as_deref(),
                CONCENTRATION_COLUMNS,
                "--platemap-concentration-column",
            )?,
        ];
        // Plate, well and compound are names: a CSV's `001` plate must not become the number 1.
        let frame = crate::input::scan_one_with_text(
            path,
            &[
                sources[0].as_str(),
                sources[1].as_str(),
                sources[2].as_str(),
            ],
        )?;
        let concentration_type = schema.get(sources[3].as_str()).expect("picked");
        if !concentration_type.is_primitive_numeric() {
            return Err(input_error(format!(
                "{}: concentration column `{}` is {concentration_type}, not numbers",
                path.display(),
                sources[3]
            )));
        }
        let selected = frame
            .select([
                col(sources[0].as_str()).cast(PlDataType::String),
                col(sources[1].as_str()).cast(PlDataType::String),
                col(sources[2].as_str()).cast(PlDataType::String),
                col(sources[3].as_str()).cast(PlDataType::Float64),
            ])
            .collect()
            .with_context(|| format!("reading {}", path.display()))?;
        let text = |index: usize| -> anyhow::Result<Vec<Option<String>>> {
            Ok(selected
                .column(sources[index].as_str())?
                .str()?
                .iter()
                .map(|value| value.map(String::from))
                .collect())
        };
        let (plates, wells, compounds) = (text(0)?, text(1)?, text(2)?);
        let concentrations: Vec<Option<f64>> = selected
            .column(sources[3].as_str())?
            .f64()?
            .iter()
            .collect();
        // Rows are numbered as a spreadsheet shows a CSV: the header is line 1.
        let line = |row: usize| row + 2;
        let mut treatments: BTreeMap<(String, String), (String, f64, usize)> = BTreeMap::new();
        for row in 0..selected.height() {
            let missing = |index: usize| {
                input_error(format!(
                    "{}: line {}: `{}` is empty",
                    path.display(),
                    line(row),
                    sources[index]
                ))
            };
            let plate = plates[row].clone().ok_or_else(|| missing(0))?;
            let well = wells[row].clone().ok_or_else(|| missing(1))?;
            let compound = compounds[row].clone().ok_or_else(|| missing(2))?;
            let concentration = concentrations[row]
                .filter(|value| value.is_finite())
                .ok_or_else(|| missing(3))?;
            match treatments.get(&(plate.clone(), well.clone())) {
                Some((first_compound, first_concentration, first_row))
                    if (first_compound, *first_concentration) != (&compound, concentration) =>
                {
                    return Err(input_error(format!(
                        "{}: well {plate}/{well} has two treatments: ({first_compound}, {first_concentration}) on line {} and ({compound}, {concentration}) on line {}",
                        path.display(),
                        line(*first_row),
                        line(row)
                    )));
                }
                Some(_) => {}
                None => {
                    treatments.insert((plate, well), (compound, concentration, row));
                }
            }
        }
        if treatments.is_empty() {
            return Err(input_error(format!("{}: no rows", path.display())));
        }
        let targets = [
            &cli.plate_column,
            &cli.well_column,
            &cli.compound_column,
            &cli.concentration_column,
        ];
        let height = treatments.len();
        let keys: Vec<&(String, String)> = treatments.keys().collect();
        let columns = vec![
            Column::new(
                targets[0].as_str().into(),
                keys.iter().map(|key| key.0.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                targets[1].as_str().into(),
                keys.iter().map(|key| key.1.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                targets[2].as_str().into(),
                treatments
                    .values()
                    .map(|value| value.0.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                targets[3].as_str().into(),
                treatments.values().map(|value| value.1).collect::<Vec<_>>(),
            ),
        ];
        let frame = DataFrame::new(height, columns)?;
        let columns = [0, 1, 2, 3].map(|index| (sources[index].clone(), targets[index].clone()));
        Ok(Some(Self {
            path: path.clone(),
            columns,
            frame,
        }))
    }

    /// The input's schema as it will be after the join: with the compound and concentration
    /// columns the plate map adds; an input that has them already is an error (annotate one
    /// source of truth).
    pub fn annotated_schema(
        &self,
        cli: &Cli,
        schema: &polars::prelude::Schema,
    ) -> anyhow::Result<polars::prelude::Schema> {
        for name in [&cli.compound_column, &cli.concentration_column] {
            if schema.contains(name) {
                return Err(input_error(format!(
                    "{}: already has a `{name}` column, which --platemap {} would add; drop one of them",
                    cli.input
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.path.display()
                )));
            }
        }
        let mut annotated = schema.clone();
        annotated.insert(cli.compound_column.as_str().into(), PlDataType::String);
        annotated.insert(
            cli.concentration_column.as_str().into(),
            PlDataType::Float64,
        );
        Ok(annotated)
    }

    /// Joins each well (plate and well compared as text) to its treatment; wells the plate map
    /// does not name get none, which `collect_wells` reports.
    pub fn join(&self, wells: LazyFrame, map: &ColumnMap) -> LazyFrame {
        let keys = [col(map.plate.as_str()), col(map.well.as_str())];
        wells
            .with_columns([
                col(map.plate.as_str()).cast(PlDataType::String),
                col(map.well.as_str()).cast(PlDataType::String),
            ])
            .join(
                self.frame.clone().lazy(),
                keys.clone(),
                keys,
                JoinArgs::new(JoinType::Left),
            )
    }

    /// `plate-column → Metadata_Plate, …` for the log and the provenance.
    pub fn describe(&self) -> String {
        self.columns
            .iter()
            .map(|(from, to)| format!("{from} → {to}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
