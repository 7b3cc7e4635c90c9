//! The layouts driven by an image table: `bbbc021` (detect nuclei on the first channel, or take
//! centres from a CellProfiler object table, and crop every channel around them) and `whole`
//! (resize each field to N×N). Fields are processed in parallel, a bounded number in flight, and
//! written in table order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use manifest_batch::build_manifest_batch;
use phenoflow_schemas::{CellKeys, ParquetTableWriter, Provenance, TableKind, TensorShape};

use crate::args::{Bbbc021Args, CommonArgs, ImageTableArgs, WholeArgs};
use crate::csv_table::CsvTable;
use crate::error::{PreprocessError, Result};
use crate::geometry::{crop_cell, resize_area, EdgePolicy};
use crate::image_io::{read_tiff, GrayImage};
use crate::layout::{FieldRecord, ImageTable, ImageTableOptions};
use crate::nuclei::{detect_nuclei, NucleusParams};
use crate::sink::{CellsSink, ItemCells, RunCounts};
use phenoflow_schemas::MoaTable;

/// Fields decoded at once per worker thread; bounds memory (a 1024×1280×3 uint16 field is 7.5 MB).
const FIELDS_PER_THREAD_IN_FLIGHT: usize = 2;

/// An object of a CellProfiler table: object number and centre (x, y) in pixels.
type Object = (i32, f64, f64);

/// Object centres from a CellProfiler object table, keyed by (TableNumber, ImageNumber).
#[derive(Debug, Default)]
pub struct Centers {
    path: PathBuf,
    by_image: HashMap<(Option<i64>, i64), Vec<Object>>,
}

impl Centers {
    /// Reads `ImageNumber`, optional `TableNumber` and `ObjectNumber`, and the first columns named
    /// `Location_Center_X`/`_Y` (or ending in `_Location_Center_X`/`_Y`, as in `Nuclei_…`).
    pub fn read(path: &Path) -> Result<Self> {
        let table = CsvTable::read(path)?;
        let image_number = table.require(&["ImageNumber"])?;
        let table_number = table.find(&["TableNumber"]);
        let object_number = table.find(&["ObjectNumber", "Nuclei_Number_Object_Number"]);
        let center_x = table.require(&["Location_Center_X", "Nuclei_Location_Center_X"])?;
        let center_y = table.require(&["Location_Center_Y", "Nuclei_Location_Center_Y"])?;
        let mut by_image: HashMap<(Option<i64>, i64), Vec<Object>> = HashMap::new();
        for row in table.rows() {
            let key = (
                row.optional_integer(table_number.as_ref())?,
                row.integer(&image_number)?,
            );
            let objects = by_image.entry(key).or_default();
            let number = match row.optional_integer(object_number.as_ref())? {
                Some(number) => number as i32,
                None => objects.len() as i32 + 1,
            };
            let (x, y) = (row.number(&center_x)?, row.number(&center_y)?);
            // A repeated row would crop the same cell twice.
            if let Some(&(other, _, _)) = objects
                .iter()
                .find(|(other, ox, oy)| *other == number || (*ox == x && *oy == y))
            {
                return Err(row.error(
                    &image_number,
                    format!(
                        "image {} lists object {number} at ({x}, {y}) twice (or at the centre of object {other}): duplicate rows would crop the same cell twice",
                        key.1
                    ),
                ));
            }
            objects.push((number, x, y));
        }
        Ok(Self {
            path: path.to_path_buf(),
            by_image,
        })
    }

    fn for_field(&self, field: &FieldRecord) -> Result<&[Object]> {
        let image_number = field.image_number.ok_or_else(|| {
            PreprocessError::Invalid(format!(
                "--centers {} needs an `ImageNumber` column in the image table (line {} has none)",
                self.path.display(),
                field.line
            ))
        })?;
        Ok(self
            .by_image
            .get(&(field.table_number, image_number))
            .or_else(|| self.by_image.get(&(None, image_number)))
            .map_or(&[], Vec::as_slice))
    }
}

fn images_root(args: &ImageTableArgs) -> PathBuf {
    args.images_root.clone().unwrap_or_else(|| {
        args.image_csv
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    })
}

/// Reads the image table (and MoA table), checks the selection is not empty and that every
/// requested plate exists.
fn read_fields(args: &ImageTableArgs, moa: Option<&MoaTable>) -> anyhow::Result<ImageTable> {
    if args.channels.is_empty() || args.channels.iter().any(|c| c.trim().is_empty()) {
        return Err(PreprocessError::Invalid(format!(
            "--channels {:?}: name at least one channel, and no empty one",
            args.channels.join(",")
        ))
        .into());
    }
    let root = images_root(args);
    let table = ImageTable::read(
        &args.image_csv,
        &ImageTableOptions {
            channels: &args.channels,
            images_root: &root,
            allow_outside_root: args.allow_outside_root,
            moa,
            unannotated: args.unannotated,
            plates: &args.plates,
            shard: args.shard,
        },
    )?;
    for plate in &args.plates {
        if !table.fields.iter().any(|field| &field.plate == plate) {
            return Err(PreprocessError::Invalid(format!(
                "{}: --plate {plate}: no (annotated) field of that plate in the image table",
                args.image_csv.display()
            ))
            .into());
        }
    }
    if table.fields.is_empty() {
        return Err(PreprocessError::Invalid(format!(
            "{}: no field selected ({} rows, {} without MoA dropped, {} on other plates)",
            args.image_csv.display(),
            table.n_rows,
            table.n_unannotated_dropped,
            table.n_other_plates
        ))
        .into());
    }
    if table.n_unannotated_dropped > 0 {
        eprintln!(
            "pf-preprocess: {} of {} fields have no MoA annotation and were dropped (--unannotated keep to keep them)",
            table.n_unannotated_dropped, table.n_rows
        );
    }
    Ok(table)
}

fn describe(field: &FieldRecord, csv: &Path) -> String {
    format!(
        "field {} {} site {} ({} line {})",
        field.plate,
        field.well,
        field.site,
        csv.display(),
        field.line
    )
}

/// Decodes every channel of a field and checks they have one size.
fn load_channels(field: &FieldRecord, csv: &Path) -> Result<Vec<GrayImage>> {
    let channels = field
        .channel_paths
        .iter()
        .map(|path| read_tiff(path))
        .collect::<Result<Vec<_>>>()?;
    let first = &channels[0];
    if channels
        .iter()
        .any(|channel| (channel.width, channel.height) != (first.width, first.height))
    {
        let details = field
            .channel_paths
            .iter()
            .zip(&channels)
            .map(|(path, channel)| {
                format!("{} is {}x{}", path.display(), channel.width, channel.height)
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PreprocessError::ChannelSizes {
            csv: csv.to_path_buf(),
            line: field.line,
            details,
        });
    }
    Ok(channels)
}

fn cell_keys(field: &FieldRecord, object_number: i32, center: Option<(f64, f64)>) -> CellKeys {
    CellKeys {
        plate: field.plate.clone(),
        well: field.well.clone(),
        site: field.site,
        compound: field.compound.clone(),
        concentration: field.concentration,
        moa: field.moa.clone(),
        batch: field.batch.clone(),
        object_number,
        center_x: center.map(|c| c.0),
        center_y: center.map(|c| c.1),
    }
}

/// Processes every field of `table` with `work` (in parallel, a bounded number in flight) and
/// writes the cells to the output of `common`.
fn write_cells(
    table: &ImageTable,
    csv: &Path,
    shape: TensorShape,
    common: &CommonArgs,
    provenance: &Provenance,
    work: impl Fn(&FieldRecord) -> Result<ItemCells> + Sync,
) -> anyhow::Result<RunCounts> {
    let mut sink = CellsSink::new(
        shape,
        table.fields.len(),
        common.skip_bad,
        !common.progress.no_progress,
        "fields",
    );
    let in_flight = rayon::current_num_threads() * FIELDS_PER_THREAD_IN_FLIGHT;
    sink.process(
        &table.fields,
        in_flight,
        |field| describe(field, csv),
        work,
        &common.output,
        provenance,
    )?;
    sink.finish(&common.output, provenance)
}

/// `pf-preprocess bbbc021`.
pub fn run_bbbc021(args: &Bbbc021Args) -> anyhow::Result<RunCounts> {
    let moa = MoaTable::read(&args.moa_csv)?;
    let table = read_fields(&args.table, Some(&moa))?;
    let centers = args.centers.as_deref().map(Centers::read).transpose()?;
    let nucleus_params = args.nucleus_params();
    let mut inputs = vec![args.table.image_csv.as_path(), args.moa_csv.as_path()];
    inputs.extend(args.centers.as_deref());
    let mut provenance = crate::provenance(TableKind::Cells, &args.params(), &inputs)?;
    let params = provenance.params.clone();
    provenance
        .extra
        .insert("channels".into(), args.table.channels.join(","));
    provenance.extra.insert(
        "n_unannotated_dropped".into(),
        table.n_unannotated_dropped.to_string(),
    );
    if let Some(manifest) = &args.table.manifest {
        write_manifest(manifest, &table, &args.table.channels, params, &inputs)?;
    }

    let crop_size = usize::from(args.crop_size);
    let shape = TensorShape::new(args.table.channels.len(), crop_size, crop_size);
    let csv = args.table.image_csv.as_path();
    write_cells(&table, csv, shape, &args.common, &provenance, |field| {
        crop_field(
            field,
            csv,
            centers.as_ref(),
            &nucleus_params,
            crop_size,
            args.edge,
        )
    })
}

fn crop_field(
    field: &FieldRecord,
    csv: &Path,
    centers: Option<&Centers>,
    nucleus_params: &NucleusParams,
    crop_size: usize,
    edge: EdgePolicy,
) -> Result<ItemCells> {
    let channels = load_channels(field, csv)?;
    if crop_size > channels[0].width || crop_size > channels[0].height {
        return Err(PreprocessError::Invalid(format!(
            "--crop-size {crop_size} is larger than the {}×{} field at line {} of {}",
            channels[0].width,
            channels[0].height,
            field.line,
            csv.display()
        )));
    }
    let objects: Vec<Object> = match centers {
        Some(centers) => {
            let objects = centers.for_field(field)?.to_vec();
            let (width, height) = (channels[0].width as f64, channels[0].height as f64);
            if let Some((number, x, y)) = objects
                .iter()
                .find(|(_, x, y)| !(0.0..=width).contains(x) || !(0.0..=height).contains(y))
            {
                return Err(PreprocessError::Invalid(format!(
                    "--centers {}: object {number} of image {} (line {} of {}) has its centre at ({x}, {y}), outside the {width}×{height} field",
                    centers.path.display(),
                    field.image_number.unwrap_or_default(),
                    field.line,
                    csv.display()
                )));
            }
            objects
        }
        None => detect_nuclei(&channels[0], nucleus_params)
            .iter()
            .enumerate()
            .map(|(index, nucleus)| (index as i32 + 1, nucleus.center_x, nucleus.center_y))
            .collect(),
    };
    let mut cells = ItemCells::default();
    // Every crop's room at once: grown crop by crop, the buffer is copied into fresh memory
    // again and again.
    cells
        .pixels
        .reserve_exact(objects.len() * channels.len() * crop_size * crop_size);
    for (object_number, center_x, center_y) in objects {
        if crop_cell(
            &channels,
            center_x,
            center_y,
            crop_size,
            edge,
            &mut cells.pixels,
        ) {
            cells
                .keys
                .push(cell_keys(field, object_number, Some((center_x, center_y))));
        } else {
            cells.n_edge_skipped += 1;
        }
    }
    Ok(cells)
}

/// `pf-preprocess whole`.
pub fn run_whole(args: &WholeArgs) -> anyhow::Result<RunCounts> {
    let moa = args.moa_csv.as_deref().map(MoaTable::read).transpose()?;
    let table = read_fields(&args.table, moa.as_ref())?;
    let mut inputs = vec![args.table.image_csv.as_path()];
    inputs.extend(args.moa_csv.as_deref());
    let mut provenance = crate::provenance(TableKind::Cells, &args.params(), &inputs)?;
    let params = provenance.params.clone();
    let channel_names = if args.grey {
        "grey".to_string()
    } else {
        args.table.channels.join(",")
    };
    provenance.extra.insert("channels".into(), channel_names);
    if let Some(manifest) = &args.table.manifest {
        write_manifest(manifest, &table, &args.table.channels, params, &inputs)?;
    }
    let n_out_channels = if args.grey {
        1
    } else {
        args.table.channels.len()
    };
    let size = usize::from(args.size);
    let shape = TensorShape::new(n_out_channels, size, size);
    let csv = args.table.image_csv.as_path();
    write_cells(&table, csv, shape, &args.common, &provenance, |field| {
        resize_field(field, csv, size, args.grey)
    })
}

fn resize_field(field: &FieldRecord, csv: &Path, size: usize, grey: bool) -> Result<ItemCells> {
    let channels = load_channels(field, csv)?;
    let (width, height) = (channels[0].width, channels[0].height);
    let as_float = |channel: &GrayImage| -> Vec<f32> {
        channel.pixels.iter().map(|&v| f32::from(v)).collect()
    };
    let planes: Vec<Vec<f32>> = if grey {
        let mut mean = vec![0.0f32; width * height];
        for channel in &channels {
            for (sum, &value) in mean.iter_mut().zip(&channel.pixels) {
                *sum += f32::from(value);
            }
        }
        let n_channels = channels.len() as f32;
        mean.iter_mut().for_each(|sum| *sum /= n_channels);
        vec![mean]
    } else {
        channels.iter().map(as_float).collect()
    };
    let mut cells = ItemCells::default();
    for plane in planes {
        let resized = resize_area(&plane, width, height, size, size);
        cells.pixels.extend(
            resized
                .into_iter()
                .map(|value| value.round().clamp(0.0, 65535.0) as u16),
        );
    }
    cells.keys.push(cell_keys(field, 1, None));
    Ok(cells)
}

/// Writes the resolved field list as an `image_manifest` table.
fn write_manifest(
    path: &Path,
    table: &ImageTable,
    channels: &[String],
    params: serde_json::Value,
    inputs: &[&Path],
) -> anyhow::Result<()> {
    let provenance = crate::provenance(TableKind::ImageManifest, &params, inputs)?;
    let batch = build_manifest_batch(&table.fields, channels);
    let mut writer = ParquetTableWriter::create(
        path,
        TableKind::ImageManifest,
        batch.schema(),
        &provenance,
        65_536,
    )?;
    writer.write(&batch)?;
    writer
        .finish()
        .with_context(|| format!("writing the manifest {}", path.display()))?;
    Ok(())
}

/// Arrow construction of the manifest batch, kept apart from the image logic above.
mod manifest_batch {
    use super::*;
    use arrow_array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};

    pub fn build_manifest_batch(fields: &[FieldRecord], channels: &[String]) -> RecordBatch {
        let mut schema_fields = TableKind::ImageManifest.required_fields(None);
        let strings = |get: &dyn Fn(&FieldRecord) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(fields.iter().map(get)))
        };
        let mut columns: Vec<ArrayRef> = vec![
            strings(&|f| &f.plate),
            strings(&|f| &f.well),
            Arc::new(Int32Array::from_iter_values(fields.iter().map(|f| f.site))),
            strings(&|f| &f.compound),
            Arc::new(Float64Array::from_iter_values(
                fields.iter().map(|f| f.concentration),
            )),
            Arc::new(StringArray::from_iter(
                fields.iter().map(|f| f.moa.as_deref()),
            )),
            strings(&|f| &f.batch),
            Arc::new(Int64Array::from_iter(fields.iter().map(|f| f.image_number))),
        ];
        for (index, channel) in channels.iter().enumerate() {
            schema_fields.push(Field::new(
                format!("Image_Path_{channel}"),
                DataType::Utf8,
                false,
            ));
            columns.push(Arc::new(StringArray::from_iter_values(
                fields
                    .iter()
                    .map(|f| f.channel_paths[index].display().to_string()),
            )));
        }
        RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns)
            .expect("manifest columns match the manifest schema")
    }
}
