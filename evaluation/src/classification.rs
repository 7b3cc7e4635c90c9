//! Supervised classification, shared by `pf-train` (cnn, resnet18) and `pf-baseline` (random
//! forest, SVM) so that every classifier is trained and scored on exactly the same split: the
//! label column of a `cells` or `embeddings` table, the seeded hold-out split (stratified by
//! label, or whole compounds or plates held out), the evaluation on the held-out rows (accuracy,
//! balanced accuracy, macro-F1, per-class precision / recall / F1, confusion counts, and the
//! majority-class baseline) and the `metrics` and `class_predictions` tables it is written as.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{Field, Schema};

use phenoflow_schemas::parquet_io::file_schema;
use phenoflow_schemas::tables::METADATA_PREFIX;
use phenoflow_schemas::{
    concentration_key, text_values, write_table_at_once, InputError, ParquetTableReader,
    Provenance, SchemaError, TableKind,
};

use crate::seeded::seeded_permutation;

/// The stream of a run's seed that draws the hold-out split (see `seeded::derive_seed`).
const SPLIT_STREAM: u64 = 1;

/// The label name meaning "compound at concentration" (`Metadata_Compound` + `Metadata_Concentration`).
pub const TREATMENT_LABEL: &str = "treatment";

/// Every row's label and `Metadata_*` keys, read from one or more tables (shards, in order).
#[derive(Debug, Clone)]
pub struct Annotations {
    /// As the user named it (`treatment`, `Metadata_Compound`, `Metadata_MoA`, ...).
    pub label_column: String,
    /// The distinct labels, sorted; a row's label is an index into this.
    pub classes: Vec<String>,
    pub labels: Vec<u32>,
    /// Every `Metadata_*` column of every row.
    pub metadata: RecordBatch,
}

impl Annotations {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Reads the label and the `Metadata_*` columns (never the pixels or features) of `paths`,
    /// each checked as table `kind`. A missing label column, a null label or shards with other
    /// key columns are errors naming the file (and the row).
    pub fn read(paths: &[PathBuf], kind: TableKind, label: &str) -> Result<Self, SchemaError> {
        let mut text_labels: Vec<String> = Vec::new();
        let mut batches: Vec<RecordBatch> = Vec::new();
        let mut metadata_schema: Option<Arc<Schema>> = None;
        for path in paths {
            let schema = file_schema(path)?;
            let names: Vec<&str> = schema
                .fields()
                .iter()
                .map(|field| field.name().as_str())
                .filter(|name| name.starts_with(METADATA_PREFIX))
                .collect();
            let needed: Vec<&str> = if label == TREATMENT_LABEL {
                vec![
                    phenoflow_schemas::columns::COMPOUND,
                    phenoflow_schemas::columns::CONCENTRATION,
                ]
            } else {
                vec![label]
            };
            for column in &needed {
                if schema.field_with_name(column).is_err() {
                    return Err(SchemaError::BadLabel {
                        path: path.clone(),
                        column: label.to_string(),
                        reason: format!(
                            "the table has no column `{column}`; its key columns are {}{}",
                            names.join(", "),
                            if label == TREATMENT_LABEL {
                                ""
                            } else {
                                " (or use `treatment`: compound at concentration)"
                            }
                        ),
                    });
                }
            }
            let mut reader = ParquetTableReader::open(path, kind, 65_536, Some(&names))?;
            let this_schema = reader.schema().clone();
            match &metadata_schema {
                None => metadata_schema = Some(this_schema.clone()),
                Some(first) if first.fields() != this_schema.fields() => {
                    return Err(SchemaError::BadLabel {
                        path: path.clone(),
                        column: label.to_string(),
                        reason: format!(
                            "its key columns differ from those of {}",
                            paths[0].display()
                        ),
                    })
                }
                Some(_) => {}
            }
            let mut row = 0usize;
            for batch in reader.by_ref() {
                let batch = batch?;
                let values =
                    label_values(&batch, label).map_err(|reason| SchemaError::BadLabel {
                        path: path.clone(),
                        column: label.to_string(),
                        reason,
                    })?;
                for (offset, value) in values.into_iter().enumerate() {
                    match value {
                        Some(value) => text_labels.push(value),
                        None => {
                            return Err(SchemaError::UnexpectedNull {
                                path: path.clone(),
                                table: kind.name(),
                                column: label.to_string(),
                                row: row + offset,
                            })
                        }
                    }
                }
                row += batch.num_rows();
                batches.push(batch);
            }
        }
        let schema = metadata_schema.unwrap_or_else(|| Arc::new(Schema::empty()));
        let metadata =
            arrow_select::concat::concat_batches(&schema, &batches).map_err(|source| {
                SchemaError::Arrow {
                    path: paths.first().cloned().unwrap_or_default(),
                    source,
                }
            })?;
        let classes: Vec<String> = text_labels
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let index: BTreeMap<&str, u32> = classes
            .iter()
            .enumerate()
            .map(|(i, name)| (name.as_str(), i as u32))
            .collect();
        let labels = text_labels
            .iter()
            .map(|name| index[name.as_str()])
            .collect();
        Ok(Self {
            label_column: label.to_string(),
            classes,
            labels,
            metadata,
        })
    }

    /// Each row's group for a compound or plate hold-out (an index per distinct value).
    pub fn groups(&self, hold_out: HoldOut) -> Result<Option<Vec<u32>>, InputError> {
        let Some(column) = hold_out.group_column() else {
            return Ok(None);
        };
        let array = self.metadata.column_by_name(column).ok_or_else(|| {
            InputError(format!(
                "--hold-out {}: the table has no column `{column}`",
                hold_out.name()
            ))
        })?;
        let values = text_values(array.as_ref()).ok_or_else(|| {
            InputError(format!(
                "--hold-out {}: column `{column}` is not text",
                hold_out.name()
            ))
        })?;
        let mut index: BTreeMap<String, u32> = BTreeMap::new();
        let mut groups = Vec::with_capacity(values.len());
        for value in values {
            let value = value.unwrap_or_default();
            let next = index.len() as u32;
            groups.push(*index.entry(value).or_insert(next));
        }
        Ok(Some(groups))
    }

    /// The hold-out split of these rows for a run's `seed` (the same split for every classifier
    /// given the same seed). A label with a single value is an error: nothing to classify.
    pub fn split(
        &self,
        hold_out: HoldOut,
        test_fraction: f64,
        seed: u64,
    ) -> Result<SplitIndices, InputError> {
        if self.classes.len() < 2 {
            return Err(InputError(format!(
                "label `{}` has a single value ({}); nothing to classify",
                self.label_column,
                self.classes.join(", ")
            )));
        }
        let seed = crate::seeded::derive_seed(seed, SPLIT_STREAM);
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(InputError(format!(
                "--test-fraction must be in (0, 1), got {test_fraction}"
            )));
        }
        let split = match self.groups(hold_out)? {
            None => stratified_split(&self.labels, test_fraction, seed),
            Some(groups) => group_split(&self.labels, &groups, test_fraction, seed),
        };
        if split.train.is_empty() || split.test.is_empty() {
            return Err(InputError(format!(
                "--hold-out {} with --test-fraction {test_fraction} leaves {} training and {} test rows of {}; \
                 the data is too small for this split",
                hold_out.name(),
                split.train.len(),
                split.test.len(),
                self.len()
            )));
        }
        Ok(split)
    }
}

/// The label of every row of `batch` as text (`None` for a null).
fn label_values(batch: &RecordBatch, label: &str) -> Result<Vec<Option<String>>, String> {
    if label == TREATMENT_LABEL {
        let compounds = batch
            .column_by_name(phenoflow_schemas::columns::COMPOUND)
            .and_then(|array| text_values(array.as_ref()))
            .ok_or("`Metadata_Compound` is not a text column")?;
        let concentrations = batch
            .column_by_name(phenoflow_schemas::columns::CONCENTRATION)
            .and_then(|array| array.as_primitive_opt::<Float64Type>())
            .ok_or("`Metadata_Concentration` is not a Float64 column")?;
        return Ok(compounds
            .into_iter()
            .enumerate()
            .map(|(row, compound)| {
                let compound = compound?;
                if concentrations.is_null(row) {
                    return None;
                }
                Some(treatment_name(&compound, concentrations.value(row)))
            })
            .collect());
    }
    let array = batch
        .column_by_name(label)
        .ok_or_else(|| format!("no column `{label}`"))?;
    text_values(array.as_ref()).ok_or_else(|| {
        format!(
            "has type {}; a label must be text or an integer",
            array.data_type()
        )
    })
}

/// `compound@concentration`, the concentration as its shortest exact decimal (`taxol@0.3`).
pub fn treatment_name(compound: &str, concentration: f64) -> String {
    // Through the key so that 0.30000000000000004 and 0.3 name the same treatment.
    let rounded = concentration_key(concentration) as f64 / 1e6;
    format!("{compound}@{rounded}")
}

/// What is held out for testing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOut {
    /// A fraction of every class's rows (the second seed's `train_test_split(stratify=y)`).
    Stratified,
    /// Whole compounds: no compound is in both splits (with an MoA label: the NSC analogue).
    Compound,
    /// Whole plates: no plate is in both splits (batch effects cannot help).
    Plate,
}

impl HoldOut {
    pub const ALL: [HoldOut; 3] = [HoldOut::Stratified, HoldOut::Compound, HoldOut::Plate];

    /// Parses a `--hold-out` value (`stratified`, `compound` or `plate`).
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|hold_out| hold_out.name() == text)
            .ok_or_else(|| format!("`{text}` is not one of stratified, compound, plate"))
    }

    pub fn name(self) -> &'static str {
        match self {
            HoldOut::Stratified => "stratified",
            HoldOut::Compound => "compound",
            HoldOut::Plate => "plate",
        }
    }

    /// The `Protocol` value of the metrics rows.
    pub fn protocol(self) -> String {
        format!("holdout-{}", self.name())
    }

    fn group_column(self) -> Option<&'static str> {
        match self {
            HoldOut::Stratified => None,
            HoldOut::Compound => Some(phenoflow_schemas::columns::COMPOUND),
            HoldOut::Plate => Some(phenoflow_schemas::columns::PLATE),
        }
    }
}

/// Row indices of the two splits, each in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// How many of a class's `n` rows go to the test split: the rounded fraction, at least one when
/// the class has two or more rows, never all of them.
fn n_test_of(n: usize, test_fraction: f64) -> usize {
    if n < 2 {
        return 0;
    }
    ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1)
}

/// Every class's rows shuffled (seeded) and the first `round(n · fraction)` held out: class
/// proportions are the same in both splits up to rounding. A class with one row stays in training.
pub fn stratified_split(labels: &[u32], test_fraction: f64, seed: u64) -> SplitIndices {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (row, &label) in labels.iter().enumerate() {
        by_class.entry(label).or_default().push(row);
    }
    let mut test = Vec::new();
    for (&class, rows) in &by_class {
        let order = seeded_permutation(rows.len(), crate::seeded::derive_seed(seed, class as u64));
        let n_test = n_test_of(rows.len(), test_fraction);
        test.extend(order[..n_test].iter().map(|&i| rows[i as usize]));
    }
    finish_split(labels.len(), test)
}

/// Whole groups held out. When every group has one label (compounds under an MoA label), each
/// label's groups are shuffled and `round(n_groups · fraction)` of them held out, so that every
/// label with two or more groups is in both splits; otherwise (plates) groups are taken in a
/// seeded order until the test split holds the fraction of the rows.
pub fn group_split(labels: &[u32], groups: &[u32], test_fraction: f64, seed: u64) -> SplitIndices {
    let mut label_of_group: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for (&label, &group) in labels.iter().zip(groups) {
        label_of_group.entry(group).or_default().insert(label);
    }
    let pure = label_of_group.values().all(|set| set.len() == 1);
    let mut held: BTreeSet<u32> = BTreeSet::new();
    if pure {
        let mut groups_of_label: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (&group, set) in &label_of_group {
            groups_of_label
                .entry(*set.iter().next().expect("one label"))
                .or_default()
                .push(group);
        }
        for (&label, label_groups) in &groups_of_label {
            let order = seeded_permutation(
                label_groups.len(),
                crate::seeded::derive_seed(seed, label as u64),
            );
            let n_test = n_test_of(label_groups.len(), test_fraction);
            held.extend(order[..n_test].iter().map(|&i| label_groups[i as usize]));
        }
    } else {
        let all: Vec<u32> = label_of_group.keys().copied().collect();
        let mut size: BTreeMap<u32, usize> = BTreeMap::new();
        for &group in groups {
            *size.entry(group).or_default() += 1;
        }
        let target = (labels.len() as f64 * test_fraction).round() as usize;
        let mut n_held = 0usize;
        for &i in &seeded_permutation(all.len(), seed) {
            if n_held >= target || held.len() + 1 >= all.len() {
                break;
            }
            let group = all[i as usize];
            held.insert(group);
            n_held += size[&group];
        }
    }
    let test = groups
        .iter()
        .enumerate()
        .filter(|(_, group)| held.contains(group))
        .map(|(row, _)| row)
        .collect();
    finish_split(labels.len(), test)
}

fn finish_split(n: usize, mut test: Vec<usize>) -> SplitIndices {
    test.sort_unstable();
    let mut is_test = vec![false; n];
    for &row in &test {
        is_test[row] = true;
    }
    let train = (0..n).filter(|&row| !is_test[row]).collect();
    SplitIndices { train, test }
}

/// The most frequent label among `rows` (ties: the first class); what a majority-class baseline
/// predicts for everything.
pub fn majority_class(labels: &[u32], rows: &[usize]) -> u32 {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for &row in rows {
        *counts.entry(labels[row]).or_default() += 1;
    }
    let best = counts.values().copied().max().unwrap_or(0);
    counts
        .into_iter()
        .find(|&(_, count)| count == best)
        .map(|(class, _)| class)
        .unwrap_or(0)
}

/// Precision, recall and F1 of one class (0 where undefined, as scikit-learn's `zero_division=0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassScore {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// True rows of this class.
    pub support: u64,
    /// Rows predicted as this class.
    pub n_predicted: u64,
}

/// A confusion matrix over named classes and everything computed from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub classes: Vec<String>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

impl Evaluation {
    pub fn new(classes: &[String], truth: &[u32], predicted: &[u32]) -> Self {
        let n = classes.len();
        let mut confusion = vec![vec![0u64; n]; n];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t as usize][p as usize] += 1;
        }
        Self {
            classes: classes.to_vec(),
            confusion,
        }
    }

    pub fn n(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    pub fn n_correct(&self) -> u64 {
        (0..self.classes.len()).map(|c| self.confusion[c][c]).sum()
    }

    pub fn accuracy(&self) -> f64 {
        ratio(self.n_correct(), self.n())
    }

    pub fn per_class(&self) -> Vec<ClassScore> {
        (0..self.classes.len())
            .map(|c| {
                let tp = self.confusion[c][c];
                let support: u64 = self.confusion[c].iter().sum();
                let n_predicted: u64 = self.confusion.iter().map(|row| row[c]).sum();
                let precision = ratio(tp, n_predicted);
                let recall = ratio(tp, support);
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScore {
                    precision,
                    recall,
                    f1,
                    support,
                    n_predicted,
                }
            })
            .collect()
    }

    /// The mean recall over classes present in the test rows (scikit-learn's
    /// `balanced_accuracy_score`): a majority-class guess scores 1 / n_classes.
    pub fn balanced_accuracy(&self) -> f64 {
        let present: Vec<f64> = self
            .per_class()
            .iter()
            .filter(|score| score.support > 0)
            .map(|score| score.recall)
            .collect();
        mean(&present)
    }

    /// The mean F1 over classes that are true or predicted at least once (scikit-learn's
    /// `f1_score(average="macro")` over the labels present).
    pub fn macro_f1(&self) -> f64 {
        let present: Vec<f64> = self
            .per_class()
            .iter()
            .filter(|score| score.support > 0 || score.n_predicted > 0)
            .map(|score| score.f1)
            .collect();
        mean(&present)
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

/// The files every classifier writes into its output folder.
pub const METRICS_FILE: &str = "metrics.parquet";
pub const CLASS_PREDICTIONS_FILE: &str = "class_predictions.parquet";

/// A classifier's scores on the held-out rows and those of the majority-class baseline.
#[derive(Debug, Clone)]
pub struct Scores {
    pub evaluation: Evaluation,
    pub baseline: Evaluation,
    /// The majority class of the training rows (what the baseline predicts).
    pub majority: u32,
}

impl Scores {
    /// [`summary_line`] of these scores.
    pub fn summary(&self, name: &str) -> String {
        summary_line(
            name,
            &self.evaluation,
            &self.baseline,
            &self.evaluation.classes[self.majority as usize],
        )
    }
}

/// Scores the predictions of the test rows (and the majority-class baseline), and writes
/// `metrics.parquet` and `class_predictions.parquet` into `out` (which exists).
pub fn score_and_write(
    out: &Path,
    annotations: &Annotations,
    split: &SplitIndices,
    hold_out: HoldOut,
    predicted: &[u32],
    confidence: &[f64],
    provenance: &Provenance,
) -> Result<Scores, SchemaError> {
    let truth: Vec<u32> = split
        .test
        .iter()
        .map(|&row| annotations.labels[row])
        .collect();
    let evaluation = Evaluation::new(&annotations.classes, &truth, predicted);
    let majority = majority_class(&annotations.labels, &split.train);
    let baseline = Evaluation::new(&annotations.classes, &truth, &vec![majority; truth.len()]);
    write_metrics(
        &out.join(METRICS_FILE),
        &hold_out.protocol(),
        &evaluation,
        &baseline,
        provenance,
    )?;
    write_class_predictions(
        &out.join(CLASS_PREDICTIONS_FILE),
        annotations,
        &split.test,
        predicted,
        confidence,
        provenance,
    )?;
    Ok(Scores {
        evaluation,
        baseline,
        majority,
    })
}

/// The line every classifier prints: its scores next to the majority-class baseline's.
pub fn summary_line(
    name: &str,
    evaluation: &Evaluation,
    baseline: &Evaluation,
    majority: &str,
) -> String {
    format!(
        "{name}: {} test rows: accuracy {:.3}, balanced accuracy {:.3}, macro-F1 {:.3} (majority class `{majority}`: accuracy {:.3}, balanced accuracy {:.3})",
        evaluation.n(),
        evaluation.accuracy(),
        evaluation.balanced_accuracy(),
        evaluation.macro_f1(),
        baseline.accuracy(),
        baseline.balanced_accuracy(),
    )
}

/// The provenance key naming the classifier (`cnn`, `resnet18`, `random-forest`, `svm`).
pub const CLASSIFIER_KEY: &str = "classifier";

/// Writes the `metrics` rows of one classifier: accuracy, balanced accuracy and macro-F1 (and the
/// same for the majority-class baseline as `majority_*`), precision / recall / F1 per class
/// (`Count` = support) and confusion counts (`true→predicted`), all under `protocol`.
pub fn write_metrics(
    path: &Path,
    protocol: &str,
    evaluation: &Evaluation,
    majority: &Evaluation,
    provenance: &Provenance,
) -> Result<(), SchemaError> {
    let n = evaluation.n() as i64;
    let mut rows: Vec<(String, String, f64, Option<i64>)> = Vec::new();
    for (prefix, scored) in [("", evaluation), ("majority_", majority)] {
        rows.push((
            format!("{prefix}accuracy"),
            "all".into(),
            scored.accuracy(),
            Some(n),
        ));
        rows.push((
            format!("{prefix}balanced_accuracy"),
            "all".into(),
            scored.balanced_accuracy(),
            Some(n),
        ));
        rows.push((
            format!("{prefix}macro_f1"),
            "all".into(),
            scored.macro_f1(),
            Some(n),
        ));
    }
    for (class, score) in evaluation.classes.iter().zip(evaluation.per_class()) {
        if score.support == 0 && score.n_predicted == 0 {
            continue;
        }
        let support = Some(score.support as i64);
        rows.push(("precision".into(), class.clone(), score.precision, support));
        rows.push(("recall".into(), class.clone(), score.recall, support));
        rows.push(("f1".into(), class.clone(), score.f1, support));
    }
    for (t, row) in evaluation.confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            if count > 0 {
                rows.push((
                    "confusion".into(),
                    format!("{}→{}", evaluation.classes[t], evaluation.classes[p]),
                    count as f64,
                    Some(count as i64),
                ));
            }
        }
    }
    let schema = Arc::new(Schema::new(TableKind::Metrics.required_fields(None)));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.0.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|_| protocol))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.1.as_str()),
        )),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.3))),
    ];
    write_table_at_once(path, TableKind::Metrics, schema, columns, provenance)
}

/// Writes a `class_predictions` table: the `Metadata_*` keys of the test rows, their true and
/// predicted labels and the classifier's confidence (softmax probability or vote share).
pub fn write_class_predictions(
    path: &Path,
    annotations: &Annotations,
    test: &[usize],
    predicted: &[u32],
    confidence: &[f64],
    provenance: &Provenance,
) -> Result<(), SchemaError> {
    let arrow_error = |source| SchemaError::Arrow {
        path: path.to_path_buf(),
        source,
    };
    let indices = UInt32Array::from_iter_values(test.iter().map(|&row| row as u32));
    let keys = arrow_select::take::take_record_batch(&annotations.metadata, &indices)
        .map_err(arrow_error)?;
    let class = |index: u32| annotations.classes[index as usize].as_str();
    let truth: Vec<u32> = test.iter().map(|&row| annotations.labels[row]).collect();
    let mut fields: Vec<Field> = TableKind::ClassPredictions.required_fields(None);
    fields.extend(
        keys.schema()
            .fields()
            .iter()
            .map(|field| field.as_ref().clone()),
    );
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            truth.iter().map(|&t| class(t)),
        )),
        Arc::new(StringArray::from_iter_values(
            predicted.iter().map(|&p| class(p)),
        )),
        Arc::new(Float64Array::from_iter_values(confidence.iter().copied())),
        Arc::new(BooleanArray::from(
            truth
                .iter()
                .zip(predicted)
                .map(|(t, p)| t == p)
                .collect::<Vec<_>>(),
        )),
    ];
    columns.extend(keys.columns().iter().cloned());
    let schema = Arc::new(Schema::new(fields));
    write_table_at_once(
        path,
        TableKind::ClassPredictions,
        schema,
        columns,
        provenance,
    )
}

/// One classifier's results as read back from its `metrics` table (for reports).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierResult {
    pub classifier: String,
    pub label_column: String,
    pub protocol: String,
    /// `(metric, value)` for accuracy, balanced_accuracy, macro_f1 and their `majority_*`.
    pub summary: BTreeMap<String, f64>,
    pub n_test: i64,
    /// `(class, precision, recall, f1, support)`.
    pub per_class: Vec<(String, f64, f64, f64, i64)>,
    pub evaluation: Evaluation,
}

/// Reads a supervised classifier's `metrics` table.
pub fn read_classifier_metrics(path: &Path) -> Result<ClassifierResult, SchemaError> {
    let provenance = phenoflow_schemas::read_provenance(path)?;
    let extra = |key: &str| {
        provenance
            .as_ref()
            .and_then(|p| p.extra.get(key).cloned())
            .unwrap_or_default()
    };
    let classifier = extra(CLASSIFIER_KEY);
    let label_column = extra("label_column");
    let mut summary = BTreeMap::new();
    let mut n_test = 0;
    let mut protocol = String::new();
    let mut scores: BTreeMap<String, (f64, f64, f64, i64)> = BTreeMap::new();
    let mut pairs: Vec<(String, String, u64)> = Vec::new();
    for (metric, proto, scope, v, count) in phenoflow_schemas::metrics::read_metrics(path)? {
        let c = count.unwrap_or(0);
        protocol = proto;
        match metric.as_str() {
            "precision" => scores.entry(scope).or_default().0 = v,
            "recall" => {
                let entry = scores.entry(scope).or_default();
                entry.1 = v;
                entry.3 = c;
            }
            "f1" => scores.entry(scope).or_default().2 = v,
            "confusion" => {
                if let Some((t, p)) = scope.split_once('→') {
                    pairs.push((t.to_string(), p.to_string(), c.max(0) as u64));
                }
            }
            other => {
                if other == "accuracy" {
                    n_test = c;
                }
                summary.insert(other.to_string(), v);
            }
        }
    }
    let classes: Vec<String> = scores.keys().cloned().collect();
    let index: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i))
        .collect();
    let mut confusion = vec![vec![0u64; classes.len()]; classes.len()];
    for (t, p, count) in pairs {
        if let (Some(&t), Some(&p)) = (index.get(t.as_str()), index.get(p.as_str())) {
            confusion[t][p] += count;
        }
    }
    let per_class = scores
        .into_iter()
        .map(|(class, (p, r, f, s))| (class, p, r, f, s))
        .collect();
    Ok(ClassifierResult {
        classifier,
        label_column,
        protocol,
        summary,
        n_test,
        per_class,
        evaluation: Evaluation { classes, confusion },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratification_keeps_class_proportions() {
        // 60 % class 0, 30 % class 1, 10 % class 2.
        let labels: Vec<u32> = (0..1000)
            .map(|i| match i % 10 {
                0..=5 => 0,
                6..=8 => 1,
                _ => 2,
            })
            .collect();
        let split = stratified_split(&labels, 0.2, 5);
        assert_eq!(split.test.len(), 200);
        assert_eq!(split.train.len() + split.test.len(), 1000);
        for (class, share) in [(0u32, 0.6), (1, 0.3), (2, 0.1)] {
            for rows in [&split.train, &split.test] {
                let n = rows.iter().filter(|&&r| labels[r] == class).count();
                assert!((n as f64 / rows.len() as f64 - share).abs() < 0.005);
            }
        }
        assert_eq!(split, stratified_split(&labels, 0.2, 5));
        assert_ne!(split.test, stratified_split(&labels, 0.2, 6).test);
    }

    #[test]
    fn a_singleton_class_stays_in_training() {
        let labels = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2];
        let split = stratified_split(&labels, 0.2, 1);
        assert!(split.train.contains(&10));
        assert_eq!(split.test.len(), 2);
    }

    #[test]
    fn compound_hold_out_keeps_compounds_apart_and_every_moa_in_both_splits() {
        // 3 MoAs × 4 compounds × 5 cells; group = compound.
        let mut labels = Vec::new();
        let mut groups = Vec::new();
        for moa in 0..3u32 {
            for compound in 0..4u32 {
                for _ in 0..5 {
                    labels.push(moa);
                    groups.push(moa * 4 + compound);
                }
            }
        }
        let split = group_split(&labels, &groups, 0.25, 9);
        let test_groups: BTreeSet<u32> = split.test.iter().map(|&r| groups[r]).collect();
        let train_groups: BTreeSet<u32> = split.train.iter().map(|&r| groups[r]).collect();
        assert!(test_groups.is_disjoint(&train_groups));
        assert_eq!(test_groups.len(), 3);
        for moa in 0..3 {
            assert!(split.test.iter().any(|&r| labels[r] == moa));
            assert!(split.train.iter().any(|&r| labels[r] == moa));
        }
    }

    #[test]
    fn plate_hold_out_takes_whole_plates() {
        let labels: Vec<u32> = (0..100).map(|i| i % 4).collect();
        let groups: Vec<u32> = (0..100).map(|i| i / 20).collect();
        let split = group_split(&labels, &groups, 0.2, 2);
        assert_eq!(split.test.len(), 20);
        let plate = groups[split.test[0]];
        assert!(split.test.iter().all(|&r| groups[r] == plate));
    }

    #[test]
    fn metrics_match_scikit_learn() {
        // sklearn: y_true=[0,0,0,0,1,1,2,2], y_pred=[0,0,1,0,1,1,0,2]
        // accuracy 0.75, balanced_accuracy (0.75+1+0.5)/3, macro f1 mean(0.75, 0.8, 0.6667).
        let classes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let evaluation = Evaluation::new(
            &classes,
            &[0, 0, 0, 0, 1, 1, 2, 2],
            &[0, 0, 1, 0, 1, 1, 0, 2],
        );
        assert_eq!(evaluation.accuracy(), 0.75);
        assert!((evaluation.balanced_accuracy() - 2.25 / 3.0).abs() < 1e-12);
        let f1 = [0.75, 0.8, 2.0 / 3.0];
        assert!((evaluation.macro_f1() - f1.iter().sum::<f64>() / 3.0).abs() < 1e-12);
        let majority = Evaluation::new(&classes, &[0, 0, 0, 0, 1, 1, 2, 2], &[0; 8]);
        assert!((majority.balanced_accuracy() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(majority_class(&[2, 1, 1, 2, 0], &[0, 1, 2, 3, 4]), 1);
    }

    #[test]
    fn treatment_names_are_stable() {
        assert_eq!(treatment_name("taxol", 0.3), "taxol@0.3");
        assert_eq!(
            treatment_name("taxol", 0.300_000_000_000_000_04),
            "taxol@0.3"
        );
        assert_eq!(treatment_name("DMSO", 0.0), "DMSO@0");
    }
}
