//! One row per cell: each image's cytoplasm objects joined to the cell and the nucleus they name,
//! with the image's metadata, written as the `single_cells` table in batches.
//!
//! pycytominer's `SingleCells.merge_single_cells` does the same join with pandas inner merges,
//! which drop a cytoplasm whose parent is missing and repeat a cell that two cytoplasms name;
//! here both are errors (they mean a damaged or mismatched export), as is an object count that
//! differs from the image table's `Count_<Compartment>` or a cell count that differs from the
//! cytoplasm count. Nuclei that no cytoplasm names (a nucleus whose cell was filtered out) are
//! left out, as in pycytominer, and counted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use indicatif::ProgressBar;
use phenoflow_schemas::ParquetTableWriter;

use crate::source::{Compartment, GroupSource, ImageRow, ImageTable, ObjectGroup, Value};

/// The object-number columns every row carries besides the image's metadata.
pub const IMAGE_NUMBER: &str = phenoflow_schemas::columns::IMAGE_NUMBER;
pub const CELL_NUMBER: &str = phenoflow_schemas::columns::OBJECT_NUMBER;
pub const CYTOPLASM_NUMBER: &str = phenoflow_schemas::columns::CYTOPLASM_NUMBER;
pub const NUCLEUS_NUMBER: &str = phenoflow_schemas::columns::NUCLEUS_NUMBER;

/// What the merge saw, for stderr and the provenance.
#[derive(Debug, Default)]
pub struct Summary {
    pub images: usize,
    pub images_without_cells: usize,
    pub cells: usize,
    pub unlinked_nuclei: usize,
    pub missing_values: usize,
    pub features: usize,
}

#[derive(Debug, Clone, Copy)]
enum MetadataType {
    Int,
    Real,
    Text,
}

/// The image metadata columns written, in order: plate, well, then the others as the image table
/// has them, each with the type its values allow.
#[derive(Debug)]
pub struct MetadataPlan {
    /// (index in the image table's metadata, output name, type).
    columns: Vec<(usize, String, MetadataType)>,
}

impl MetadataPlan {
    pub fn new(
        images: &ImageTable,
        plate_column: &str,
        well_column: &str,
    ) -> anyhow::Result<MetadataPlan> {
        let find = |wanted: &str, flag: &str| -> anyhow::Result<usize> {
            let wanted = wanted.strip_prefix("Image_").unwrap_or(wanted);
            images
                .columns
                .iter()
                .position(|name| name == wanted)
                .ok_or_else(|| {
                    crate::input_error(format!(
                        "{}: no image metadata column `{wanted}` ({flag} names it; its metadata columns: {})",
                        images.source,
                        crate::source::first_names(&images.columns)
                    ))
                })
        };
        let plate = find(plate_column, "--plate-column")?;
        let well = find(well_column, "--well-column")?;
        let mut columns = vec![
            (
                plate,
                phenoflow_schemas::columns::PLATE.to_string(),
                MetadataType::Text,
            ),
            (
                well,
                phenoflow_schemas::columns::WELL.to_string(),
                MetadataType::Text,
            ),
        ];
        let reserved = [
            phenoflow_schemas::columns::PLATE,
            phenoflow_schemas::columns::WELL,
            IMAGE_NUMBER,
            CELL_NUMBER,
            CYTOPLASM_NUMBER,
            NUCLEUS_NUMBER,
        ];
        for (index, name) in images.columns.iter().enumerate() {
            if index == plate || index == well {
                continue;
            }
            if reserved.contains(&name.as_str()) {
                return Err(crate::input_error(format!(
                    "{}: image metadata column `{name}` would collide with the `{name}` the table is given \
                     (--plate-column / --well-column name another column)",
                    images.source
                )));
            }
            let values = images.rows.iter().map(|row| &row.metadata[index]);
            let column_type = if values
                .clone()
                .all(|value| matches!(value, Value::Null | Value::Int(_)))
            {
                MetadataType::Int
            } else if values
                .clone()
                .all(|value| matches!(value, Value::Null | Value::Int(_) | Value::Real(_)))
            {
                MetadataType::Real
            } else {
                MetadataType::Text
            };
            columns.push((index, name.clone(), column_type));
        }
        Ok(MetadataPlan { columns })
    }

    fn fields(&self) -> Vec<Field> {
        self.columns
            .iter()
            .enumerate()
            .map(|(position, (_, name, column_type))| {
                let data_type = match column_type {
                    MetadataType::Int => DataType::Int64,
                    MetadataType::Real => DataType::Float64,
                    MetadataType::Text => DataType::Utf8,
                };
                Field::new(name, data_type, position >= 2)
            })
            .collect()
    }
}

enum MetadataBuilder {
    Int(Int64Builder),
    Real(Float64Builder),
    Text(StringBuilder),
}

/// Column builders for one batch of rows.
struct Batch {
    metadata: Vec<MetadataBuilder>,
    numbers: [Int64Builder; 4],
    features: Vec<Float64Builder>,
    rows: usize,
}

impl Batch {
    fn new(plan: &MetadataPlan, n_features: usize) -> Batch {
        Batch {
            metadata: plan
                .columns
                .iter()
                .map(|(_, _, column_type)| match column_type {
                    MetadataType::Int => MetadataBuilder::Int(Int64Builder::new()),
                    MetadataType::Real => MetadataBuilder::Real(Float64Builder::new()),
                    MetadataType::Text => MetadataBuilder::Text(StringBuilder::new()),
                })
                .collect(),
            numbers: std::array::from_fn(|_| Int64Builder::new()),
            features: (0..n_features).map(|_| Float64Builder::new()).collect(),
            rows: 0,
        }
    }

    fn finish(&mut self, schema: &SchemaRef) -> anyhow::Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for builder in &mut self.metadata {
            columns.push(match builder {
                MetadataBuilder::Int(builder) => Arc::new(builder.finish()),
                MetadataBuilder::Real(builder) => Arc::new(builder.finish()),
                MetadataBuilder::Text(builder) => Arc::new(builder.finish()),
            });
        }
        for builder in &mut self.numbers {
            columns.push(Arc::new(builder.finish()));
        }
        for builder in &mut self.features {
            columns.push(Arc::new(builder.finish()));
        }
        self.rows = 0;
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// The output schema: metadata, the four object numbers, then every compartment's features.
pub fn output_schema(
    plan: &MetadataPlan,
    features: &[String],
    source: &str,
) -> anyhow::Result<SchemaRef> {
    let mut fields = plan.fields();
    for name in [IMAGE_NUMBER, CELL_NUMBER, CYTOPLASM_NUMBER, NUCLEUS_NUMBER] {
        fields.push(Field::new(name, DataType::Int64, false));
    }
    let mut seen = std::collections::HashSet::new();
    for name in features {
        if !seen.insert(name.as_str()) {
            return Err(crate::input_error(format!(
                "{source}: two measurement columns are both named `{name}`"
            )));
        }
        fields.push(Field::new(name, DataType::Float64, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// A compartment stream with one group of look-ahead.
struct Stream<'a> {
    source: &'a mut dyn GroupSource,
    next: Option<ObjectGroup>,
    compartment: Compartment,
}

impl Stream<'_> {
    /// The objects of `image` (none if the table has none), after checking that the table names
    /// no image the image table lacks.
    fn take(&mut self, image: i64, images: &ImageTable) -> anyhow::Result<ObjectGroup> {
        if self.next.is_none() {
            self.next = self.source.next_group()?;
        }
        match &self.next {
            Some(group) if group.image < image => Err(unknown_image(self, group.image, images)),
            Some(group) if group.image == image => Ok(self.next.take().expect("peeked")),
            _ => Ok(ObjectGroup {
                image,
                parents: vec![Vec::new(); self.compartment.links().len()],
                ..ObjectGroup::default()
            }),
        }
    }
}

fn unknown_image(stream: &Stream<'_>, image: i64, images: &ImageTable) -> anyhow::Error {
    crate::input_error(format!(
        "{}: ImageNumber {image} is not in the image table {}",
        stream.source.source(),
        images.source
    ))
}

/// Merges every image's objects and writes the rows.
pub fn merge(
    images: &ImageTable,
    plan: &MetadataPlan,
    sources: [&mut dyn GroupSource; 3],
    writer: &mut ParquetTableWriter,
    schema: &SchemaRef,
    rows_per_batch: usize,
    progress: &ProgressBar,
) -> anyhow::Result<Summary> {
    let n_features: Vec<usize> = sources
        .iter()
        .map(|source| source.features().len())
        .collect();
    // How errors name the three tables, once (the streams are borrowed mutably per image).
    let owned_names: Vec<String> = sources
        .iter()
        .map(|source| source.source().to_string())
        .collect();
    let names: Vec<&str> = owned_names.iter().map(String::as_str).collect();
    let mut summary = Summary {
        images: images.rows.len(),
        features: n_features.iter().sum(),
        ..Summary::default()
    };
    let mut streams: Vec<Stream<'_>> = sources
        .into_iter()
        .zip(Compartment::ALL)
        .map(|(source, compartment)| Stream {
            source,
            next: None,
            compartment,
        })
        .collect();
    let mut batch = Batch::new(plan, summary.features);
    for image in &images.rows {
        let groups = [
            streams[0].take(image.number, images)?,
            streams[1].take(image.number, images)?,
            streams[2].take(image.number, images)?,
        ];
        merge_image(
            images,
            image,
            plan,
            &groups,
            &names,
            &n_features,
            &mut batch,
            &mut summary,
        )?;
        if batch.rows >= rows_per_batch {
            writer.write(&batch.finish(schema)?)?;
        }
        progress.inc(1);
    }
    for stream in &mut streams {
        if stream.next.is_none() {
            stream.next = stream.source.next_group()?;
        }
        if let Some(group) = &stream.next {
            return Err(unknown_image(stream, group.image, images));
        }
    }
    if batch.rows > 0 {
        writer.write(&batch.finish(schema)?)?;
    }
    Ok(summary)
}

fn object_index(
    group: &ObjectGroup,
    source: &str,
    image: i64,
) -> anyhow::Result<HashMap<i64, usize>> {
    let mut index = HashMap::with_capacity(group.objects.len());
    for (position, &object) in group.objects.iter().enumerate() {
        if index.insert(object, position).is_some() {
            return Err(crate::input_error(format!(
                "{source}: ImageNumber {image}: object {object} appears twice"
            )));
        }
    }
    Ok(index)
}

#[allow(clippy::too_many_arguments)]
fn merge_image(
    images: &ImageTable,
    image: &ImageRow,
    plan: &MetadataPlan,
    groups: &[ObjectGroup; 3],
    names: &[&str],
    n_features: &[usize],
    batch: &mut Batch,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let [cells, cytoplasm, nuclei] = groups;
    for (compartment, group) in Compartment::ALL.iter().zip(groups) {
        let slot = *compartment as usize;
        if let Some(count) = image.counts[slot] {
            if count != group.objects.len() as i64 {
                return Err(crate::input_error(format!(
                    "{}: ImageNumber {} has {} objects, but {} says Count_{} = {count} (a truncated or \
                     mismatched table)",
                    names[slot],
                    image.number,
                    group.objects.len(),
                    images.source,
                    compartment.name()
                )));
            }
        }
    }
    if cells.objects.len() != cytoplasm.objects.len() {
        return Err(crate::input_error(format!(
            "ImageNumber {}: {} has {} objects but {} has {}: CellProfiler makes one cytoplasm per cell, \
             so one of the two tables is truncated or from another run",
            image.number,
            names[0],
            cells.objects.len(),
            names[1],
            cytoplasm.objects.len()
        )));
    }
    if cytoplasm.objects.is_empty() {
        summary.images_without_cells += 1;
        summary.unlinked_nuclei += nuclei.objects.len();
        return Ok(());
    }
    for (index, name, _) in plan.columns.iter().take(2) {
        if image.metadata[*index].is_missing() {
            return Err(crate::input_error(format!(
                "{}: ImageNumber {} has no `{name}` value, and its {} cells need their plate and well",
                images.source,
                image.number,
                cytoplasm.objects.len()
            )));
        }
    }
    let cell_index = object_index(cells, names[0], image.number)?;
    let nucleus_index = object_index(nuclei, names[2], image.number)?;
    let mut cell_taken = vec![false; cells.objects.len()];
    let mut nucleus_taken = vec![false; nuclei.objects.len()];
    for row in 0..cytoplasm.objects.len() {
        let object = cytoplasm.objects[row];
        let link = |which: usize, index: &HashMap<i64, usize>, target: usize| {
            let parent = cytoplasm.parents[which][row];
            index.get(&parent).copied().ok_or_else(|| {
                crate::input_error(format!(
                    "{}: ImageNumber {}, object {object}: Parent_{} = {parent} names no object of {} in that \
                     image",
                    names[1],
                    image.number,
                    Compartment::ALL[target].name(),
                    names[target]
                ))
            })
        };
        let cell = link(0, &cell_index, 0)?;
        let nucleus = link(1, &nucleus_index, 2)?;
        if std::mem::replace(&mut cell_taken[cell], true) {
            return Err(crate::input_error(format!(
                "{}: ImageNumber {}: two cytoplasm objects name cell {} as their parent",
                names[1], image.number, cells.objects[cell]
            )));
        }
        nucleus_taken[nucleus] = true;
        for (builder, (index, _, _)) in batch.metadata.iter_mut().zip(&plan.columns) {
            let value = &image.metadata[*index];
            match builder {
                MetadataBuilder::Int(builder) => builder.append_option(match value {
                    Value::Int(int) => Some(*int),
                    _ => None,
                }),
                MetadataBuilder::Real(builder) => builder.append_option(match value {
                    Value::Int(int) => Some(*int as f64),
                    Value::Real(real) if real.is_finite() => Some(*real),
                    _ => None,
                }),
                MetadataBuilder::Text(builder) => builder.append_option(value.as_text()),
            }
        }
        batch.numbers[0].append_value(image.number);
        batch.numbers[1].append_value(cells.objects[cell]);
        batch.numbers[2].append_value(object);
        batch.numbers[3].append_value(nuclei.objects[nucleus]);
        let mut builders = batch.features.iter_mut();
        for (group, (&count, position)) in [cells, cytoplasm, nuclei]
            .iter()
            .zip(n_features.iter().zip([cell, row, nucleus]))
        {
            for &value in &group.values[position * count..(position + 1) * count] {
                let builder = builders.next().expect("one builder per feature");
                if value.is_finite() {
                    builder.append_value(value);
                } else {
                    builder.append_null();
                    summary.missing_values += 1;
                }
            }
        }
        batch.rows += 1;
        summary.cells += 1;
    }
    summary.unlinked_nuclei += nucleus_taken.iter().filter(|taken| !**taken).count();
    Ok(())
}
