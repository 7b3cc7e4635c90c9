//! The tables that pass between stages, as data: for each one its name, version, required
//! columns (name, type, nullability, meaning) and whether it carries numeric feature columns.
//! This module is what every reader and writer checks against; the column tables of the pages
//! under `schemas/tables/` are generated from it (`make table-docs`, drift-tested), their prose
//! is written by hand.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::tensor::{TensorShape, PIXELS_COLUMN};
use crate::SchemaError;

/// The logical type of a column, a little looser than an Arrow `DataType` on read (strings may be
/// `Utf8`, `LargeUtf8` or `Utf8View`, since polars and pyarrow write different ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Utf8,
    Int32,
    Int64,
    Float64,
    Boolean,
    /// A `uint16` `arrow.fixed_shape_tensor` of rank 3, `[C,H,W]`.
    PixelTensor,
}

impl ColumnType {
    /// The Arrow type this crate writes for the column (tensors are built by [`TensorShape`]).
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Int32 => DataType::Int32,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::PixelTensor => {
                DataType::FixedSizeList(Arc::new(Field::new("item", DataType::UInt16, true)), 0)
            }
        }
    }

    fn accepts(self, data_type: &DataType) -> bool {
        match self {
            ColumnType::Utf8 => matches!(
                data_type,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            ColumnType::PixelTensor => matches!(data_type, DataType::FixedSizeList(_, _)),
            other => &other.arrow_type() == data_type,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "Utf8",
            ColumnType::Int32 => "Int32",
            ColumnType::Int64 => "Int64",
            ColumnType::Float64 => "Float64",
            ColumnType::Boolean => "Boolean",
            ColumnType::PixelTensor => "arrow.fixed_shape_tensor<UInt16>[C,H,W]",
        }
    }
}

/// One required column of a table.
#[derive(Debug, Clone, Copy)]
pub struct ColumnSpec {
    pub name: &'static str,
    pub column_type: ColumnType,
    pub nullable: bool,
    /// Unit and meaning, for the table's page under `schemas/tables/` (generated from here).
    pub meaning: &'static str,
}

const fn column(name: &'static str, column_type: ColumnType, meaning: &'static str) -> ColumnSpec {
    ColumnSpec {
        name,
        column_type,
        nullable: false,
        meaning,
    }
}

const fn nullable(
    name: &'static str,
    column_type: ColumnType,
    meaning: &'static str,
) -> ColumnSpec {
    ColumnSpec {
        name,
        column_type,
        nullable: true,
        meaning,
    }
}

/// Columns a table holds beyond its required ones, by pattern (features, per-channel paths, the
/// input's other keys): documented with the table, checked by the rules of [`TableKind`].
#[derive(Debug, Clone, Copy)]
pub struct OtherColumns {
    pub pattern: &'static str,
    pub types: &'static str,
    pub null: &'static str,
    pub meaning: &'static str,
}

const fn other(
    pattern: &'static str,
    types: &'static str,
    null: &'static str,
    meaning: &'static str,
) -> OtherColumns {
    OtherColumns {
        pattern,
        types,
        null,
        meaning,
    }
}

use ColumnType::{Boolean, Float64, Int32, Int64, PixelTensor, Utf8};

/// Prefix of every key (non-feature) column, as in pycytominer.
pub const METADATA_PREFIX: &str = crate::columns::PREFIX;
/// Prefix of the per-channel image path columns of the image manifest.
pub const IMAGE_PATH_PREFIX: &str = "Image_Path_";

// The meanings of the keys most tables share.
const PLATE: &str = "plate name, e.g. `Week4_27481`";
const WELL: &str = "well, e.g. `B02`";
const SITE: &str = "site (field) within the well, from 1";
const COMPOUND: &str = "compound name as in the image table (`DMSO` for controls)";
const CONCENTRATION: &str = "concentration in µM";
const BATCH: &str = "batch: the part of the plate name before `_` (`Week4`); the NSCB hold-out key";

const IMAGE_MANIFEST_COLUMNS: &[ColumnSpec] = &[
    column(crate::columns::PLATE, Utf8, PLATE),
    column(crate::columns::WELL, Utf8, WELL),
    column(crate::columns::SITE, Int32, SITE),
    column(crate::columns::COMPOUND, Utf8, COMPOUND),
    column(crate::columns::CONCENTRATION, Float64, CONCENTRATION),
    nullable(
        crate::columns::MOA,
        Utf8,
        "mechanism of action; null when the treatment has no MoA row",
    ),
    column(crate::columns::BATCH, Utf8, BATCH),
    nullable(
        crate::columns::IMAGE_NUMBER,
        Int64,
        "`ImageNumber` of the image table, when it has one",
    ),
];

const CELLS_COLUMNS: &[ColumnSpec] = &[
    column(crate::columns::PLATE, Utf8, PLATE),
    column(crate::columns::WELL, Utf8, WELL),
    column(crate::columns::SITE, Int32, SITE),
    column(crate::columns::COMPOUND, Utf8, COMPOUND),
    column(crate::columns::CONCENTRATION, Float64, CONCENTRATION),
    nullable(
        crate::columns::MOA,
        Utf8,
        "mechanism of action from the MoA table; null only under `--unannotated keep`",
    ),
    column(crate::columns::BATCH, Utf8, BATCH),
    column(
        crate::columns::OBJECT_NUMBER,
        Int32,
        "object number within the field, from 1 (detection order, or the CellProfiler \
         `ObjectNumber`, or `Single_Cell_Image_Id + 1`)",
    ),
    nullable(
        crate::columns::LOCATION_CENTER_X,
        Float64,
        "column of the crop centre in the field, pixels from 0 (null for pre-cropped cells)",
    ),
    nullable(
        crate::columns::LOCATION_CENTER_Y,
        Float64,
        "row of the crop centre, pixels from 0",
    ),
    column(
        PIXELS_COLUMN,
        PixelTensor,
        "raw intensities, shape `[C,H,W]` row-major, `dim_names` `[\"C\",\"H\",\"W\"]`",
    ),
];

/// CellProfiler single-cell features merged across compartments (written by `pf-cellprofiler`):
/// the image's plate and well (and its other `Metadata_*` columns, whatever types they hold), the
/// image and cell object numbers; features nullable (a measurement CellProfiler could not make).
const SINGLE_CELLS_COLUMNS: &[ColumnSpec] = &[
    column(
        crate::columns::PLATE,
        Utf8,
        "from the image table (`--plate-column`)",
    ),
    column(
        crate::columns::WELL,
        Utf8,
        "from the image table (`--well-column`)",
    ),
    column(
        crate::columns::IMAGE_NUMBER,
        Int64,
        "CellProfiler's image number",
    ),
    column(
        crate::columns::OBJECT_NUMBER,
        Int64,
        "the cell's object number",
    ),
];

const EMBEDDINGS_COLUMNS: &[ColumnSpec] = &[
    column(crate::columns::PLATE, Utf8, PLATE),
    column(crate::columns::WELL, Utf8, WELL),
    column(crate::columns::SITE, Int32, SITE),
    column(crate::columns::COMPOUND, Utf8, COMPOUND),
    column(crate::columns::CONCENTRATION, Float64, CONCENTRATION),
    nullable(
        crate::columns::MOA,
        Utf8,
        "mechanism of action, as in `cells` (null only under pf-preprocess's `--unannotated keep`)",
    ),
    column(crate::columns::BATCH, Utf8, BATCH),
    column(
        crate::columns::OBJECT_NUMBER,
        Int32,
        "object number within the field, as in `cells`",
    ),
];

const WELLS_COLUMNS: &[ColumnSpec] = &[
    column(crate::columns::PLATE, Utf8, PLATE),
    column(crate::columns::WELL, Utf8, WELL),
    column(crate::columns::COMPOUND, Utf8, COMPOUND),
    column(crate::columns::CONCENTRATION, Float64, CONCENTRATION),
    nullable(
        crate::columns::MOA,
        Utf8,
        "mechanism of action: the input's (`--moa-column`) or joined from `--moa-csv`",
    ),
    column(
        crate::columns::BATCH,
        Utf8,
        "batch of the well's plate: the input's (`--batch-column`), or the part of the plate name \
         before `_`; the NSCB hold-out key",
    ),
    column(
        crate::columns::COUNT_CELLS,
        Int64,
        "cells aggregated into the well",
    ),
];

const TREATMENTS_COLUMNS: &[ColumnSpec] = &[
    column(crate::columns::COMPOUND, Utf8, COMPOUND),
    column(crate::columns::CONCENTRATION, Float64, CONCENTRATION),
    nullable(
        crate::columns::MOA,
        Utf8,
        "mechanism of action, as in `wells`",
    ),
    nullable(
        crate::columns::BATCH,
        Utf8,
        "the batches of the treatment's wells, sorted and `;`-joined (`Week4`, or \
         `Week1;Week2;…` for DMSO and taxol); NSCB compares these sets",
    ),
    column(crate::columns::COUNT_WELLS, Int64, "wells aggregated"),
];

const PREDICTIONS_COLUMNS: &[ColumnSpec] = &[
    column(crate::columns::COMPOUND, Utf8, "the query's compound"),
    column(
        crate::columns::CONCENTRATION,
        Float64,
        "the query's concentration in µM",
    ),
    column(crate::columns::MOA, Utf8, "the query's mechanism of action"),
    nullable(
        crate::columns::BATCH,
        Utf8,
        "the query's batches (`;`-joined)",
    ),
    column(
        "Protocol",
        Utf8,
        "`NSC`, `NSCB` (standard protocol) or `NSC-seed` (seed-compatible)",
    ),
    column("Nearest_Compound", Utf8, "the nearest admissible treatment"),
    column("Nearest_Concentration", Float64, "its concentration in µM"),
    column("Predicted_MoA", Utf8, "its MoA: the prediction"),
    column(
        "Distance",
        Float64,
        "cosine distance (1 − cosine similarity) or Euclidean distance",
    ),
    column("Correct", Boolean, "`Predicted_MoA == Metadata_MoA`"),
];

const METRICS_COLUMNS: &[ColumnSpec] = &[
    column(
        "Metric",
        Utf8,
        "e.g. `accuracy`, `recall`, `mean_average_precision`, `confusion`",
    ),
    column(
        "Protocol",
        Utf8,
        "`NSC`, `NSCB`, `NSCB-<n>` (NSCB over all n queries, unscorable MoAs counted wrong), \
         `NSC-seed`",
    ),
    column(
        "Scope",
        Utf8,
        "`all`, an MoA name, or `true→predicted` for confusion counts",
    ),
    column(
        "Value",
        Float64,
        "the value (fractions in [0, 1], counts as numbers)",
    ),
    nullable("Count", Int64, "the denominator or count behind the value"),
];

const METRICS_SUMMARY_COLUMNS: &[ColumnSpec] = &[
    column("Metric", Utf8, "as in [`metrics`](metrics.md)"),
    column("Protocol", Utf8, "as in [`metrics`](metrics.md)"),
    column("Scope", Utf8, "as in [`metrics`](metrics.md)"),
    column("Mean", Float64, "mean of the replicates' values"),
    nullable(
        "SD",
        Float64,
        "sample standard deviation (denominator n − 1); null with one replicate",
    ),
    column("Min", Float64, "the smallest of the replicates' values"),
    column("Max", Float64, "the largest of the replicates' values"),
    column(
        "Replicates",
        Int64,
        "how many replicates have the row (a per-MoA row a replicate could not score is not \
         padded)",
    ),
    nullable(
        "Count",
        Int64,
        "the replicates' common `Count` (queries, support); null when they differ",
    ),
];

const CLASS_PREDICTIONS_COLUMNS: &[ColumnSpec] = &[
    column(
        "Label",
        Utf8,
        "the true label (the value of `--label`; for `treatment`, `compound@µM`)",
    ),
    column("Predicted_Label", Utf8, "the classifier's label"),
    column(
        "Confidence",
        Float64,
        "softmax probability of the prediction (CNNs, random forest: share of trees; SVM: share \
         of one-vs-one votes)",
    ),
    column("Correct", Boolean, "`Predicted_Label == Label`"),
];

const TRAINING_LOG_COLUMNS: &[ColumnSpec] = &[
    column("Epoch", Int32, "epoch, from 1"),
    column("Split", Utf8, "`train` or `validation`"),
    column(
        "Term",
        Utf8,
        "`reconstruction`, `kl`, `elbo`, `discriminator`, `feature_matching`, ...",
    ),
    column(
        "Value",
        Float64,
        "the mean of the term per image over the epoch, finite",
    ),
];

const IMAGE_MANIFEST_OTHERS: &[OtherColumns] = &[other(
    "`Image_Path_<channel>`",
    "Utf8",
    "no",
    "resolved path of each channel's image, one column per channel, in tensor order",
)];

const EMBEDDINGS_OTHERS: &[OtherColumns] = &[other(
    "features, e.g. `Cells_CytoVAE_z000` … `Cells_CytoVAE_z255`",
    "Float32",
    "no",
    "the profile vector (posterior mean μ, or μ gated by γ for sparse models; never a sample), \
     finite",
)];

const SINGLE_CELLS_OTHERS: &[OtherColumns] = &[
    other(
        "other `Metadata_*` of the image table",
        "Int64, Float64 or Utf8",
        "yes",
        "as its values allow (`Metadata_Site`, …)",
    ),
    other(
        "`Metadata_Cytoplasm_Number_Object_Number`, `Metadata_Nuclei_Number_Object_Number`",
        "Int64",
        "no (SQLite, CSV)",
        "the cytoplasm and nucleus merged into the row",
    ),
    other(
        "`Cells_*`, `Cytoplasm_*`, `Nuclei_*`",
        "Float64",
        "yes",
        "CellProfiler's measurements; null where it could not make one",
    ),
];

const WELLS_OTHERS: &[OtherColumns] = &[other(
    "features",
    "Float32 or Float64",
    "no",
    "aggregated features, finite",
)];

const TREATMENTS_OTHERS: &[OtherColumns] = &[other(
    "features",
    "Float32 or Float64",
    "no",
    "aggregated features, finite",
)];

const CLASS_PREDICTIONS_OTHERS: &[OtherColumns] = &[other(
    "`Metadata_*`",
    "as in the input",
    "",
    "every key column of the input row (plate, well, site, compound, ...)",
)];

/// The line that opens the generated column table of a page under `schemas/tables/`.
pub const GENERATED_BEGIN: &str =
    "<!-- columns: generated from schemas/src/tables.rs by `make table-docs`; edit them there -->";
/// The line that closes it.
pub const GENERATED_END: &str = "<!-- end of generated columns -->";

/// A table's page under `schemas/tables/` with its column table and its title's version as the
/// spec says: the text between [`GENERATED_BEGIN`] and [`GENERATED_END`] replaced (or, on a page
/// without them, its first Markdown table), the rest, written by hand, kept.
pub fn update_table_page(kind: TableKind, page: &str) -> Result<String, String> {
    let title = format!("# `{}` (version {})", kind.name(), kind.version());
    let mut lines = page.lines();
    match lines.next() {
        Some(first) if first.starts_with(&format!("# `{}`", kind.name())) => {}
        other => {
            return Err(format!(
                "{}.md: the first line is {other:?}, not the title `{title}`",
                kind.name()
            ))
        }
    }
    let body: Vec<&str> = lines.collect();
    let (start, end) = match (
        body.iter().position(|line| *line == GENERATED_BEGIN),
        body.iter().position(|line| *line == GENERATED_END),
    ) {
        (Some(start), Some(end)) if start < end => (start, end + 1),
        (None, None) => {
            let start = body
                .iter()
                .position(|line| line.starts_with("| column |"))
                .ok_or_else(|| format!("{}.md has no column table", kind.name()))?;
            let end = start
                + body[start..]
                    .iter()
                    .take_while(|line| line.starts_with('|'))
                    .count();
            (start, end)
        }
        _ => {
            return Err(format!(
                "{}.md: its generated columns are not between one `{GENERATED_BEGIN}` and one `{GENERATED_END}`",
                kind.name()
            ))
        }
    };
    let mut text = format!("{title}\n");
    for line in &body[..start] {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(GENERATED_BEGIN);
    text.push('\n');
    text.push_str(&kind.markdown_columns());
    text.push_str(GENERATED_END);
    text.push('\n');
    for line in &body[end..] {
        text.push_str(line);
        text.push('\n');
    }
    Ok(text)
}

/// Every table that passes between stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// One row per imaged field: keys plus one path column per channel.
    ImageManifest,
    /// One row per cell: keys, location and the raw pixel tensor.
    Cells,
    /// One row per cell: keys and one float feature column per latent dimension.
    Embeddings,
    /// One row per cell of a CellProfiler screen: keys and its compartments' measurements.
    SingleCells,
    /// One row per well (plate + well): keys, cell count and aggregated features.
    Wells,
    /// One row per treatment (compound + concentration): keys, well count and features.
    Treatments,
    /// One row per query treatment and hold-out protocol: the nearest neighbour and its MoA.
    Predictions,
    /// Long table of named metrics (accuracy, recall per MoA, mAP, confusion counts).
    Metrics,
    /// The metrics of replicate runs (one per training seed) summarised: mean, sample standard
    /// deviation, range and number of replicates of each (metric, protocol, scope).
    MetricsSummary,
    /// Long table of per-epoch loss terms for the training and validation splits.
    TrainingLog,
    /// One row per held-out image or cell of a supervised classifier: its keys, true and
    /// predicted label.
    ClassPredictions,
}

impl TableKind {
    pub const ALL: [TableKind; 11] = [
        TableKind::ImageManifest,
        TableKind::Cells,
        TableKind::Embeddings,
        TableKind::SingleCells,
        TableKind::Wells,
        TableKind::Treatments,
        TableKind::Predictions,
        TableKind::Metrics,
        TableKind::MetricsSummary,
        TableKind::TrainingLog,
        TableKind::ClassPredictions,
    ];

    /// The name written into every file's metadata (`phenoflow.schema`).
    pub fn name(self) -> &'static str {
        match self {
            TableKind::ImageManifest => "image_manifest",
            TableKind::Cells => "cells",
            TableKind::Embeddings => "embeddings",
            TableKind::SingleCells => "single_cells",
            TableKind::Wells => "wells",
            TableKind::Treatments => "treatments",
            TableKind::Predictions => "predictions",
            TableKind::Metrics => "metrics",
            TableKind::MetricsSummary => "metrics_summary",
            TableKind::TrainingLog => "training_log",
            TableKind::ClassPredictions => "class_predictions",
        }
    }

    /// Bumped whenever a required column changes; readers accept only their own version.
    pub fn version(self) -> u32 {
        1
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The columns every file of this table must have, in the order writers emit them.
    pub fn required_columns(self) -> &'static [ColumnSpec] {
        match self {
            TableKind::ImageManifest => IMAGE_MANIFEST_COLUMNS,
            TableKind::Cells => CELLS_COLUMNS,
            TableKind::Embeddings => EMBEDDINGS_COLUMNS,
            TableKind::SingleCells => SINGLE_CELLS_COLUMNS,
            TableKind::Wells => WELLS_COLUMNS,
            TableKind::Treatments => TREATMENTS_COLUMNS,
            TableKind::Predictions => PREDICTIONS_COLUMNS,
            TableKind::Metrics => METRICS_COLUMNS,
            TableKind::MetricsSummary => METRICS_SUMMARY_COLUMNS,
            TableKind::TrainingLog => TRAINING_LOG_COLUMNS,
            TableKind::ClassPredictions => CLASS_PREDICTIONS_COLUMNS,
        }
    }

    /// What the table holds beyond its required columns, by pattern (documentation only).
    pub fn other_columns(self) -> &'static [OtherColumns] {
        match self {
            TableKind::ImageManifest => IMAGE_MANIFEST_OTHERS,
            TableKind::Embeddings => EMBEDDINGS_OTHERS,
            TableKind::SingleCells => SINGLE_CELLS_OTHERS,
            TableKind::Wells => WELLS_OTHERS,
            TableKind::Treatments => TREATMENTS_OTHERS,
            TableKind::ClassPredictions => CLASS_PREDICTIONS_OTHERS,
            TableKind::Cells
            | TableKind::Predictions
            | TableKind::Metrics
            | TableKind::MetricsSummary
            | TableKind::TrainingLog => &[],
        }
    }

    /// The table's columns as the Markdown table of its page under `schemas/tables/` (between
    /// [`GENERATED_BEGIN`] and [`GENERATED_END`]; `make table-docs` writes it, a test compares).
    pub fn markdown_columns(self) -> String {
        let mut text = String::from("| column | type | null | meaning |\n|---|---|---|---|\n");
        for spec in self.required_columns() {
            let type_name = match spec.column_type {
                ColumnType::PixelTensor => {
                    "`arrow.fixed_shape_tensor` over `FixedSizeList<UInt16>`"
                }
                other => other.describe(),
            };
            text.push_str(&format!(
                "| `{}` | {type_name} | {} | {} |\n",
                spec.name,
                if spec.nullable { "yes" } else { "no" },
                spec.meaning
            ));
        }
        for other in self.other_columns() {
            text.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                other.pattern, other.types, other.null, other.meaning
            ));
        }
        text
    }

    /// Whether the table carries numeric feature columns (any column not starting with
    /// `Metadata_`), at least one of them, all `Float32` or `Float64` and finite (those of
    /// `single_cells` may be null: a measurement CellProfiler could not make).
    pub fn has_features(self) -> bool {
        matches!(
            self,
            TableKind::Embeddings
                | TableKind::SingleCells
                | TableKind::Wells
                | TableKind::Treatments
        )
    }

    /// The Arrow fields of the required columns (the pixel tensor with the given shape).
    pub fn required_fields(self, tensor_shape: Option<TensorShape>) -> Vec<Field> {
        self.required_columns()
            .iter()
            .map(|spec| match spec.column_type {
                PixelTensor => tensor_shape
                    .expect("a pixel tensor column needs a tensor shape")
                    .field(spec.name),
                other => Field::new(spec.name, other.arrow_type(), spec.nullable),
            })
            .collect()
    }

    /// Checks a schema against this table: required columns with the right types, the tensor's
    /// extension type, feature columns, and no stray non-metadata columns in key-only tables.
    pub fn validate_schema(self, schema: &Schema, path: &Path) -> Result<(), SchemaError> {
        for spec in self.required_columns() {
            let field =
                schema
                    .field_with_name(spec.name)
                    .map_err(|_| SchemaError::MissingColumn {
                        path: path.to_path_buf(),
                        table: self.name(),
                        column: spec.name.to_string(),
                    })?;
            if !spec.column_type.accepts(field.data_type()) {
                return Err(SchemaError::WrongType {
                    path: path.to_path_buf(),
                    table: self.name(),
                    column: spec.name.to_string(),
                    expected: spec.column_type.describe().to_string(),
                    found: field.data_type().to_string(),
                });
            }
            if spec.column_type == PixelTensor {
                TensorShape::from_field(field, path)?;
            }
        }
        let is_required = |name: &str| self.required_columns().iter().any(|spec| spec.name == name);
        let mut n_features = 0usize;
        for field in schema.fields() {
            let name = field.name();
            if is_required(name) || name.starts_with(METADATA_PREFIX) {
                continue;
            }
            if self.has_features() {
                if !matches!(field.data_type(), DataType::Float32 | DataType::Float64) {
                    return Err(SchemaError::WrongType {
                        path: path.to_path_buf(),
                        table: self.name(),
                        column: name.clone(),
                        expected: "Float32 or Float64 (feature column)".into(),
                        found: field.data_type().to_string(),
                    });
                }
                n_features += 1;
            } else if self == TableKind::ImageManifest && name.starts_with(IMAGE_PATH_PREFIX) {
                if !Utf8.accepts(field.data_type()) {
                    return Err(SchemaError::WrongType {
                        path: path.to_path_buf(),
                        table: self.name(),
                        column: name.clone(),
                        expected: "Utf8 (image path)".into(),
                        found: field.data_type().to_string(),
                    });
                }
                n_features += 1;
            } else {
                return Err(SchemaError::WrongType {
                    path: path.to_path_buf(),
                    table: self.name(),
                    column: name.clone(),
                    expected: format!(
                        "no such column in table `{}` (extra key columns must start with `{METADATA_PREFIX}`)",
                        self.name()
                    ),
                    found: field.data_type().to_string(),
                });
            }
        }
        if self.has_features() && n_features == 0 {
            return Err(SchemaError::NoFeatures {
                path: path.to_path_buf(),
                table: self.name(),
            });
        }
        if self == TableKind::ImageManifest && n_features == 0 {
            return Err(SchemaError::MissingColumn {
                path: path.to_path_buf(),
                table: self.name(),
                column: format!("{IMAGE_PATH_PREFIX}<channel>"),
            });
        }
        Ok(())
    }

    /// Checks the values of one batch: no nulls in non-nullable required columns and no NaN or
    /// infinite value in any float column. `first_row` is the batch's offset in the file, so
    /// that errors name the file's row (0-based).
    pub fn validate_batch(
        self,
        batch: &RecordBatch,
        path: &Path,
        first_row: usize,
    ) -> Result<(), SchemaError> {
        let schema = batch.schema();
        for spec in self.required_columns().iter().filter(|spec| !spec.nullable) {
            let Ok(index) = schema.index_of(spec.name) else {
                continue;
            };
            let array = batch.column(index);
            if array.null_count() > 0 {
                let row = (0..array.len())
                    .find(|&row| array.is_null(row))
                    .unwrap_or(0);
                return Err(SchemaError::UnexpectedNull {
                    path: path.to_path_buf(),
                    table: self.name(),
                    column: spec.name.to_string(),
                    row: first_row + row,
                });
            }
        }
        for (index, field) in schema.fields().iter().enumerate() {
            let array = batch.column(index);
            let non_finite_row = match field.data_type() {
                DataType::Float32 => first_non_finite(
                    array
                        .as_any()
                        .downcast_ref::<arrow_array::Float32Array>()
                        .expect("Float32 column")
                        .iter()
                        .map(|value| value.map(f64::from)),
                ),
                DataType::Float64 => first_non_finite(
                    array
                        .as_any()
                        .downcast_ref::<arrow_array::Float64Array>()
                        .expect("Float64 column")
                        .iter(),
                ),
                _ => None,
            };
            if let Some(row) = non_finite_row {
                return Err(SchemaError::NonFinite {
                    path: path.to_path_buf(),
                    column: field.name().clone(),
                    row: first_row + row,
                });
            }
        }
        Ok(())
    }
}

fn first_non_finite(values: impl Iterator<Item = Option<f64>>) -> Option<usize> {
    values
        .enumerate()
        .find(|(_, value)| value.is_some_and(|value| !value.is_finite()))
        .map(|(row, _)| row)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_table_pages_hold_the_columns_of_the_specs() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tables");
        for kind in TableKind::ALL {
            let path = folder.join(format!("{}.md", kind.name()));
            let page = std::fs::read_to_string(&path).unwrap();
            let updated = update_table_page(kind, &page).unwrap();
            assert!(
                updated == page,
                "{} differs from the spec in schemas/src/tables.rs: run `make table-docs`",
                path.display()
            );
            for spec in kind.required_columns() {
                assert!(
                    !spec.meaning.is_empty(),
                    "{}: {} has no meaning",
                    kind.name(),
                    spec.name
                );
            }
        }
    }

    #[test]
    fn a_page_whose_columns_drifted_is_rewritten_and_its_prose_kept() {
        let kind = TableKind::TrainingLog;
        let page = "# `training_log` (version 0)\n\nProse.\n\n| column | type | null | meaning |\n|---|---|---|---|\n| `Epoch` | Int64 | no | old |\n\nMore prose.\n".to_string();
        let updated = update_table_page(kind, &page).unwrap();
        assert!(updated.starts_with("# `training_log` (version 1)\n\nProse.\n\n"));
        assert!(updated.contains("| `Epoch` | Int32 | no | epoch, from 1 |"));
        assert!(updated.contains(GENERATED_BEGIN) && updated.ends_with("\nMore prose.\n"));
        assert_eq!(update_table_page(kind, &updated).unwrap(), updated);
        assert!(update_table_page(TableKind::Cells, &page).is_err());
    }

    use super::*;

    fn path() -> &'static Path {
        Path::new("t.parquet")
    }

    #[test]
    fn every_table_validates_its_own_required_fields() {
        for kind in TableKind::ALL {
            let mut fields = kind.required_fields(Some(TensorShape::new(3, 68, 68)));
            if kind.has_features() {
                fields.push(Field::new("Cells_VAE_z000", DataType::Float32, false));
            }
            if kind == TableKind::ImageManifest {
                fields.push(Field::new("Image_Path_DNA", DataType::Utf8, false));
            }
            kind.validate_schema(&Schema::new(fields), path())
                .unwrap_or_else(|error| panic!("{}: {error}", kind.name()));
            assert_eq!(TableKind::from_name(kind.name()), Some(kind));
        }
    }

    #[test]
    fn missing_column_is_named() {
        let fields: Vec<Field> = TableKind::TrainingLog
            .required_fields(None)
            .into_iter()
            .filter(|field| field.name() != "Term")
            .collect();
        let error = TableKind::TrainingLog
            .validate_schema(&Schema::new(fields), path())
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.parquet: missing required column `Term` of table `training_log`"
        );
    }

    #[test]
    fn string_feature_is_rejected_and_features_are_required() {
        let mut fields = TableKind::Wells.required_fields(None);
        let no_features = TableKind::Wells
            .validate_schema(&Schema::new(fields.clone()), path())
            .unwrap_err();
        assert!(matches!(no_features, SchemaError::NoFeatures { .. }));
        fields.push(Field::new("Cells_Area", DataType::Utf8, false));
        let error = TableKind::Wells
            .validate_schema(&Schema::new(fields), path())
            .unwrap_err();
        assert!(error.to_string().contains("`Cells_Area`"), "{error}");
    }

    #[test]
    fn nan_feature_names_column_and_row() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "Cells_VAE_z000",
            DataType::Float32,
            false,
        )]));
        let values = arrow_array::Float32Array::from(vec![1.0, 2.0, f32::NAN]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).unwrap();
        let error = TableKind::Embeddings
            .validate_batch(&batch, path(), 10)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "t.parquet: column `Cells_VAE_z000` holds a non-finite value (NaN or inf) at row 12"
        );
    }
}
