//! The pre-cropped layout of the DTU course data set (the seed paper's input): `metadata.csv`,
//! one row per cell, and `<images_dir>/<Multi_Cell_Image_Name>/<Multi_Cell_Image_Name>_<Single_Cell_Image_Id>.npy`,
//! each a `uint16` HWC array (68×68×3, channels DNA, F-actin, β-tubulin) of raw intensities.
//! Cells are transposed to CHW and written unchanged.

use std::path::{Path, PathBuf};

use phenoflow_schemas::{CellKeys, TableKind, TensorShape};

use crate::args::SinglecellArgs;
use crate::csv_table::CsvTable;
use crate::error::{PreprocessError, Result};
use crate::image_io::read_npy_u16;
use phenoflow_schemas::batch_of_plate;

use crate::layout::{site_from_file_name, KeyColumns};
use crate::sink::{CellsSink, ItemCells, RunCounts};

/// Cells in flight at once (each ~27 kB at 68×68×3).
const CELLS_IN_FLIGHT: usize = 4096;

/// The folder of `.npy` files in the DTU layout.
pub const DTU_IMAGES_DIR: &str = "singh_cp_pipeline_singlecell_images";

/// One row of `metadata.csv`.
#[derive(Debug, Clone)]
struct CellRecord {
    line: u64,
    path: PathBuf,
    keys: CellKeys,
}

fn read_metadata(
    metadata: &Path,
    images_dir: &Path,
    plates: &[String],
    shard: Option<(usize, usize)>,
) -> Result<Vec<CellRecord>> {
    let table = CsvTable::read(metadata)?;
    let image_name = table.require(&["Multi_Cell_Image_Name"])?;
    let cell_id = table.require(&["Single_Cell_Image_Id"])?;
    let KeyColumns {
        plate,
        well,
        compound,
        concentration,
    } = KeyColumns::require(&table)?;
    let moa = table.require(&[
        "moa",
        phenoflow_schemas::columns::MOA,
        phenoflow_schemas::columns::MOA_LOWERCASE,
    ])?;
    let shard_plates = match shard {
        None => None,
        Some(shard) => {
            let names = table
                .rows()
                .map(|row| row.text(&plate).map(str::to_string))
                .collect::<Result<Vec<_>>>()?;
            Some(phenoflow_schemas::shard_plates(
                names.iter().map(String::as_str),
                shard,
            ))
        }
    };
    let mut cells = Vec::with_capacity(table.n_rows());
    for row in table.rows() {
        let plate_name = row.text(&plate)?;
        if !plates.is_empty() && !plates.iter().any(|p| p == plate_name) {
            continue;
        }
        if shard_plates
            .as_ref()
            .is_some_and(|selected| !selected.iter().any(|p| p == plate_name))
        {
            continue;
        }
        let field_name = row.text(&image_name)?;
        // A folder name under the images folder, never a path out of it.
        if !phenoflow_schemas::is_plain_file_name(field_name) {
            return Err(row.error(
                &image_name,
                format!("`{field_name}` is not a folder name (no `/`, `\\` or `..`): cells are read only from inside the images folder"),
            ));
        }
        let id = row.integer(&cell_id)?;
        if id < 0 {
            return Err(row.error(&cell_id, format!("negative cell id {id}")));
        }
        let site = site_from_file_name(field_name)
            .ok_or_else(|| row.error(&image_name, format!("no `_s<site>_` in `{field_name}`")))?;
        cells.push(CellRecord {
            line: row.line,
            path: images_dir
                .join(field_name)
                .join(format!("{field_name}_{id}.npy")),
            keys: CellKeys {
                plate: plate_name.to_string(),
                well: row.text(&well)?.to_string(),
                site,
                compound: row.text(&compound)?.to_string(),
                concentration: row.number(&concentration)?,
                moa: Some(row.text(&moa)?.to_string()),
                batch: batch_of_plate(plate_name),
                // Single_Cell_Image_Id counts from 0 within its field; object numbers from 1.
                object_number: id as i32 + 1,
                center_x: None,
                center_y: None,
            },
        });
    }
    let mut seen = std::collections::HashMap::with_capacity(cells.len());
    for cell in &cells {
        if let Some(line) = seen.insert(&cell.path, cell.line) {
            return Err(PreprocessError::Invalid(format!(
                "{}: lines {line} and {} name the same cell {}: duplicate rows would give duplicate cells",
                metadata.display(),
                cell.line,
                cell.path.display()
            )));
        }
    }
    // A shard may hold no plate (4 shards of a 1-plate screen): an empty table, not an error.
    if cells.is_empty() && (!plates.is_empty() || shard.is_none()) {
        return Err(PreprocessError::Invalid(format!(
            "{}: no cell selected ({} rows)",
            metadata.display(),
            table.n_rows()
        )));
    }
    Ok(cells)
}

/// Reads one cell, checks its shape against the first cell's, and transposes HWC → CHW.
fn read_cell(cell: &CellRecord, shape: TensorShape) -> Result<ItemCells> {
    let array = read_npy_u16(&cell.path)?;
    let expected = [shape.height, shape.width, shape.channels];
    if array.shape != expected {
        return Err(PreprocessError::Npy {
            path: cell.path.clone(),
            reason: format!(
                "shape {:?}, expected {expected:?} (HWC) like the first cell",
                array.shape
            ),
        });
    }
    let mut pixels = vec![0u16; shape.len()];
    let plane = shape.height * shape.width;
    for (position, hwc) in array.values.chunks_exact(shape.channels).enumerate() {
        for (channel, &value) in hwc.iter().enumerate() {
            pixels[channel * plane + position] = value;
        }
    }
    Ok(ItemCells {
        keys: vec![cell.keys.clone()],
        pixels,
        n_edge_skipped: 0,
    })
}

/// `pf-preprocess singlecell`.
pub fn run(args: &SinglecellArgs) -> anyhow::Result<RunCounts> {
    let metadata = args.metadata_path();
    let images_dir = args
        .images_dir
        .clone()
        .unwrap_or_else(|| args.root.join(DTU_IMAGES_DIR));
    let cells = read_metadata(&metadata, &images_dir, &args.plates, args.shard)?;
    // The first cell fixes the tensor shape; every other cell must match it. A shard without
    // cells takes the shape of the table's first cell, so that its empty table fits the others.
    let first_path = match cells.first() {
        Some(cell) => cell.path.clone(),
        None => {
            let all = read_metadata(&metadata, &images_dir, &[], None)?;
            let (index, count) = args.shard.expect("only a shard may select no cell");
            eprintln!(
                "pf-preprocess: shard {index}/{count} holds no plate of {} (it has fewer plates than shards); writing an empty table",
                metadata.display()
            );
            all[0].path.clone()
        }
    };
    let first = read_npy_u16(&first_path)?;
    let [height, width, channels] = first.shape[..] else {
        return Err(PreprocessError::Npy {
            path: first_path.clone(),
            reason: format!("shape {:?} is not HWC (rank 3)", first.shape),
        }
        .into());
    };
    // The DTU layout is HWC with three channels (DNA, F-actin, β-tubulin): a CHW file
    // (3, 68, 68) would otherwise become 68 "channels" of 3×68 pixels under three names.
    if channels != 3 {
        let hint = if first.shape[0] == 3 {
            "; it looks channel-first (CHW): store cells as (height, width, 3), e.g. np.moveaxis(cell, 0, -1)"
        } else {
            ""
        };
        return Err(PreprocessError::Npy {
            path: first_path.clone(),
            reason: format!(
                "shape {:?} is not (height, width, 3): the pre-cropped layout holds DNA, F-actin and β-tubulin as the last axis{hint}",
                first.shape
            ),
        }
        .into());
    }
    let shape = TensorShape::new(channels, height, width);
    let mut provenance =
        crate::provenance(TableKind::Cells, &args.params(), &[metadata.as_path()])?;
    provenance
        .extra
        .insert("channels".into(), "DNA,F-actin,beta-tubulin".into());
    let output = &args.common.output;
    let mut sink = CellsSink::new(
        shape,
        cells.len(),
        args.common.skip_bad,
        !args.common.progress.no_progress,
        "cells",
    )
    .allow_empty();
    sink.process(
        &cells,
        CELLS_IN_FLIGHT,
        |cell| {
            format!(
                "cell {} ({} line {})",
                cell.path.display(),
                metadata.display(),
                cell.line
            )
        },
        |cell| read_cell(cell, shape),
        output,
        &provenance,
    )?;
    sink.finish(output, &provenance)
}
