//! What every CellProfiler layout is read into: the image table (one row per image: its number,
//! its `Metadata_*` values, its `Count_<Compartment>` object counts) and, per compartment, a
//! stream of object groups, one group per image, in increasing image number.

use std::fmt;

/// The three compartments CellProfiler's standard pipelines measure, in the order their features
/// are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compartment {
    Cells,
    Cytoplasm,
    Nuclei,
}

impl Compartment {
    pub const ALL: [Compartment; 3] = [
        Compartment::Cells,
        Compartment::Cytoplasm,
        Compartment::Nuclei,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Compartment::Cells => "Cells",
            Compartment::Cytoplasm => "Cytoplasm",
            Compartment::Nuclei => "Nuclei",
        }
    }

    /// The parent links a compartment's objects carry that the merge follows: a cytoplasm names
    /// its cell and its nucleus (CellProfiler's IdentifyTertiaryObjects), as pycytominer's default
    /// `compartment_linking_cols` expect.
    pub fn links(self) -> &'static [Compartment] {
        match self {
            Compartment::Cytoplasm => &[Compartment::Cells, Compartment::Nuclei],
            _ => &[],
        }
    }
}

/// One value of an image table's metadata column.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// A float that is a whole number (a count or an object number written `109.0`), exactly.
pub fn whole_number(value: f64) -> Option<i64> {
    (value.is_finite() && value.fract() == 0.0 && value.abs() < 9.0e15).then_some(value as i64)
}

impl Value {
    /// A CSV field as CellProfiler writes it: an integer, a real, text, or empty. An integer
    /// written otherwise than its canonical form (a plate `001`, a well `+1`) stays text, so that
    /// it keeps its name (the SQLite backend stores such metadata as TEXT).
    pub fn parse(text: &str) -> Value {
        if text.is_empty() {
            Value::Null
        } else if let Some(int) = text
            .parse::<i64>()
            .ok()
            .filter(|int| int.to_string() == text)
        {
            Value::Int(int)
        } else if text.parse::<i64>().is_ok() {
            Value::Text(text.to_string())
        } else if let Ok(real) = text.parse::<f64>() {
            Value::Real(real)
        } else {
            Value::Text(text.to_string())
        }
    }

    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Int(int) => Some(int.to_string()),
            Value::Real(real) => Some(real.to_string()),
            Value::Text(text) => Some(text.clone()),
        }
    }

    pub fn is_missing(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Text(text) => text.trim().is_empty(),
            Value::Real(real) => real.is_nan(),
            Value::Int(_) => false,
        }
    }
}

/// The image table, read whole: it has one small row per image (only its metadata and counts
/// are kept), so even a screen of a million fields takes a few hundred MB at most.
#[derive(Debug)]
pub struct ImageTable {
    /// How errors name it: `Image.csv` or `Per_Image`, with the file.
    pub source: String,
    /// The metadata columns' names as written (`Metadata_*`).
    pub columns: Vec<String>,
    /// Sorted by image number, no image twice.
    pub rows: Vec<ImageRow>,
}

impl ImageTable {
    /// The image table of `rows` in any order: sorted by image number here (not by SQL, where a
    /// column mixing INTEGER and TEXT numbers sorts them apart), no image twice.
    pub fn new(
        source: String,
        columns: Vec<String>,
        mut rows: Vec<ImageRow>,
    ) -> anyhow::Result<ImageTable> {
        rows.sort_by_key(|row| row.number);
        if let Some(pair) = rows
            .windows(2)
            .find(|pair| pair[0].number == pair[1].number)
        {
            return Err(crate::input_error(format!(
                "{source}: ImageNumber {} appears twice",
                pair[0].number
            )));
        }
        Ok(ImageTable {
            source,
            columns,
            rows,
        })
    }
}

#[derive(Debug)]
pub struct ImageRow {
    pub number: i64,
    pub metadata: Vec<Value>,
    /// `Count_Cells`, `Count_Cytoplasm`, `Count_Nuclei` where the image table has them.
    pub counts: [Option<i64>; 3],
}

/// The objects of one compartment in one image.
#[derive(Debug, Default)]
pub struct ObjectGroup {
    pub image: i64,
    pub objects: Vec<i64>,
    /// One vector per entry of [`Compartment::links`], aligned with `objects`.
    pub parents: Vec<Vec<i64>>,
    /// Row-major, `objects.len() × n_features`; NaN where the measurement is missing.
    pub values: Vec<f64>,
}

/// A compartment table read image by image.
pub trait GroupSource {
    /// How errors name the table (`Cells.csv` or `Per_Cells`, with its file).
    fn source(&self) -> &str;
    /// The feature names as written, prefixed with the compartment (`Cells_AreaShape_Area`).
    fn features(&self) -> &[String];
    /// The next image's objects; `None` at the end.
    fn next_group(&mut self) -> anyhow::Result<Option<ObjectGroup>>;
}

/// Where in a compartment table a value sits, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub source: &'a str,
    pub image: i64,
    pub object: i64,
}

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: ImageNumber {}, object {}",
            self.source, self.image, self.object
        )
    }
}

/// Which columns of a compartment table are what. `names` are the table's own column names.
#[derive(Debug)]
pub struct Layout {
    pub image: usize,
    pub object: usize,
    pub parents: Vec<usize>,
    /// (index in the table, output name).
    pub features: Vec<(usize, String)>,
}

impl Layout {
    /// Finds the columns of `compartment` in a table whose columns are `names`. `prefix` is what
    /// the table's measurement names start with (`Cells_` in SQLite, nothing in a CSV); the
    /// object number is `object_column`. A measurement column is any other column but the
    /// linking ones (`ImageNumber`, `TableNumber`, the object number, `Number_Object_Number`,
    /// `Parent_*`); its output name is the compartment's prefix and its unprefixed name.
    pub fn find(
        compartment: Compartment,
        source: &str,
        names: &[String],
        prefix: &str,
        object_column: &str,
    ) -> anyhow::Result<Layout> {
        let index = |column: &str| -> anyhow::Result<usize> {
            names.iter().position(|name| name == column).ok_or_else(|| {
                crate::input_error(format!(
                    "{source}: no `{column}` column (its columns: {})",
                    first_names(names)
                ))
            })
        };
        let image = index("ImageNumber")?;
        let object = index(object_column)?;
        let parents = compartment
            .links()
            .iter()
            .map(|parent| index(&format!("{prefix}Parent_{}", parent.name())))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut features = Vec::new();
        for (position, name) in names.iter().enumerate() {
            let Some(measurement) = name.strip_prefix(prefix) else {
                continue;
            };
            // ExportToSpreadsheet can add the image's metadata to every object file
            // ("Add image metadata columns to your object data file"): not measurements.
            if name.starts_with(phenoflow_schemas::columns::PREFIX) {
                continue;
            }
            if position == image
                || position == object
                || name == "TableNumber"
                || measurement == "Number_Object_Number"
                || measurement == "ObjectNumber"
                || measurement == "ImageNumber"
                || measurement.starts_with("Parent_")
                || measurement.is_empty()
            {
                continue;
            }
            features.push((position, format!("{}_{measurement}", compartment.name())));
        }
        if features.is_empty() {
            return Err(crate::input_error(format!(
                "{source}: no measurement columns (its columns: {})",
                first_names(names)
            )));
        }
        Ok(Layout {
            image,
            object,
            parents,
            features,
        })
    }
}

/// The first 20 names of a list, for a message that says what a table holds.
pub fn first_names(names: &[String]) -> String {
    let mut shown: Vec<&str> = names.iter().take(20).map(String::as_str).collect();
    if names.len() > 20 {
        shown.push("…");
    }
    shown.join(", ")
}

/// Groups rows, given one at a time in file order, into per-image groups, and checks the file
/// is sorted by image number.
#[derive(Debug, Default)]
pub struct Grouper {
    current: Option<ObjectGroup>,
    last_image: Option<i64>,
}

impl Grouper {
    /// Adds one object; returns the previous image's group when this object starts a new image.
    pub fn push(
        &mut self,
        source: &str,
        image: i64,
        object: i64,
        parents: &[i64],
        values: &[f64],
    ) -> anyhow::Result<Option<ObjectGroup>> {
        let mut finished = None;
        if self
            .current
            .as_ref()
            .is_some_and(|group| group.image != image)
        {
            finished = self.current.take();
        }
        if let Some(last) = self.last_image {
            if image < last {
                return Err(crate::input_error(format!(
                    "{source}: ImageNumber {image} comes after ImageNumber {last}: the table must be sorted by \
                     ImageNumber, as CellProfiler writes it"
                )));
            }
        }
        self.last_image = Some(image);
        let group = self.current.get_or_insert_with(|| ObjectGroup {
            image,
            parents: vec![Vec::new(); parents.len()],
            ..ObjectGroup::default()
        });
        group.objects.push(object);
        for (links, &parent) in group.parents.iter_mut().zip(parents) {
            links.push(parent);
        }
        group.values.extend_from_slice(values);
        Ok(finished)
    }

    /// The last group, at the end of the file.
    pub fn finish(&mut self) -> Option<ObjectGroup> {
        self.current.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_values_keep_names_that_look_like_numbers() {
        assert_eq!(Value::parse("1"), Value::Int(1));
        assert_eq!(Value::parse("001"), Value::Text("001".into()));
        assert_eq!(Value::parse("+1"), Value::Text("+1".into()));
        assert_eq!(Value::parse("109.0"), Value::Real(109.0));
        assert_eq!(Value::parse("A01"), Value::Text("A01".into()));
        assert_eq!(Value::parse(""), Value::Null);
        assert!(Value::Text("  ".into()).is_missing());
    }

    #[test]
    fn groups_follow_images_and_refuse_an_unsorted_table() {
        let mut grouper = Grouper::default();
        assert!(grouper.push("t", 1, 1, &[], &[0.5]).unwrap().is_none());
        assert!(grouper.push("t", 1, 2, &[], &[1.5]).unwrap().is_none());
        let first = grouper.push("t", 3, 1, &[], &[2.5]).unwrap().unwrap();
        assert_eq!(
            (first.image, first.objects, first.values),
            (1, vec![1, 2], vec![0.5, 1.5])
        );
        let error = grouper
            .push("t", 2, 1, &[], &[0.0])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ImageNumber 2 comes after ImageNumber 3"),
            "{error}"
        );
    }

    #[test]
    fn linking_columns_and_image_metadata_are_not_measurements() {
        let names: Vec<String> = [
            "ImageNumber",
            "ObjectNumber",
            phenoflow_schemas::columns::PLATE,
            "Number_Object_Number",
            "Parent_Cells",
            "Parent_Nuclei",
            "AreaShape_Area",
        ]
        .iter()
        .map(|name| name.to_string())
        .collect();
        let layout = Layout::find(Compartment::Cytoplasm, "t", &names, "", "ObjectNumber").unwrap();
        assert_eq!(layout.parents, vec![4, 5]);
        assert_eq!(
            layout.features,
            vec![(6, "Cytoplasm_AreaShape_Area".to_string())]
        );
    }
}
