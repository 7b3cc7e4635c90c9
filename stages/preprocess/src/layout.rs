//! The published BBBC021 layout: `BBBC021_v1_image.csv` (one row per field, one file and path
//! column per channel) joined with `BBBC021_v1_moa.csv` (compound, concentration → MoA) into a
//! list of fields with resolved image paths. The same reader takes CellProfiler LoadData-style
//! tables (`Metadata_Plate`, `Image_FileName_<channel>`, ...), for other screens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use phenoflow_schemas::{batch_of_plate, MoaTable};

use crate::csv_table::{Column, CsvTable};
use crate::error::{PreprocessError, Result};

/// What to do with a field whose treatment has no row in the MoA table. BBBC021 images 113
/// compounds, of which 38 (+ DMSO) are annotated: only 3,848 of the 13,200 fields have an MoA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unannotated {
    /// Leave the field out (counted on stderr and in the output's metadata).
    Drop,
    /// Keep the field with a null `Metadata_MoA`.
    Keep,
    /// Stop with an error naming the row.
    Error,
}

/// The keys of one imaged field.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRecord {
    /// Line of the image table this field comes from (for error messages).
    pub line: u64,
    pub plate: String,
    pub well: String,
    pub site: i32,
    pub compound: String,
    pub concentration: f64,
    pub moa: Option<String>,
    pub batch: String,
    pub table_number: Option<i64>,
    pub image_number: Option<i64>,
    /// One path per requested channel, in the requested order.
    pub channel_paths: Vec<PathBuf>,
}

/// The site number written in BBBC021-style file names: `G10_s1_w1<GUID>.tif` → 1.
pub fn site_from_file_name(file_name: &str) -> Option<i32> {
    file_name.split('_').find_map(|part| {
        let digits = part.strip_prefix('s')?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
    })
}

/// The key columns of BBBC021-style tables (the image table and the DTU `metadata.csv`), under
/// every spelling accepted: BBBC021's `Image_Metadata_*_DAPI`, CellProfiler's `Image_Metadata_*`
/// and pycytominer's `Metadata_*`.
#[derive(Debug, Clone)]
pub struct KeyColumns {
    pub plate: Column,
    pub well: Column,
    pub compound: Column,
    pub concentration: Column,
}

impl KeyColumns {
    pub fn require(table: &CsvTable) -> Result<Self> {
        Ok(Self {
            plate: table.require(&[
                "Image_Metadata_Plate_DAPI",
                "Image_Metadata_Plate",
                phenoflow_schemas::columns::PLATE,
            ])?,
            well: table.require(&[
                "Image_Metadata_Well_DAPI",
                "Image_Metadata_Well",
                phenoflow_schemas::columns::WELL,
            ])?,
            compound: table.require(&[
                "Image_Metadata_Compound",
                phenoflow_schemas::columns::COMPOUND,
            ])?,
            concentration: table.require(&[
                "Image_Metadata_Concentration",
                phenoflow_schemas::columns::CONCENTRATION,
            ])?,
        })
    }
}

/// How to read an image table.
#[derive(Debug, Clone)]
pub struct ImageTableOptions<'a> {
    /// Channel names as in `Image_FileName_<name>`, in the order the tensor stores them.
    pub channels: &'a [String],
    /// Folder the `Image_PathName_*` values are relative to.
    pub images_root: &'a Path,
    /// Accept absolute `Image_PathName_*` values and `..` (by default refused).
    pub allow_outside_root: bool,
    pub moa: Option<&'a MoaTable>,
    pub unannotated: Unannotated,
    /// Keep only these plates (all when empty).
    pub plates: &'a [String],
    /// Keep only this shard `(i, n)` of the table's plates (see `phenoflow_schemas::shard_plates`).
    pub shard: Option<(usize, usize)>,
}

/// The fields of an image table, after the MoA join and the plate filter.
#[derive(Debug)]
pub struct ImageTable {
    pub path: PathBuf,
    pub fields: Vec<FieldRecord>,
    pub n_rows: usize,
    pub n_unannotated_dropped: usize,
    pub n_other_plates: usize,
}

impl ImageTable {
    pub fn read(path: &Path, options: &ImageTableOptions<'_>) -> Result<Self> {
        let table = CsvTable::read(path)?;
        let KeyColumns {
            plate,
            well,
            compound,
            concentration,
        } = KeyColumns::require(&table)?;
        let site = table.find(&["Image_Metadata_Site", phenoflow_schemas::columns::SITE]);
        let table_number = table.find(&["TableNumber"]);
        let image_number = table.find(&["ImageNumber"]);
        let channel_columns = options
            .channels
            .iter()
            .map(|channel| {
                Ok((
                    table.require(&[&format!("Image_FileName_{channel}")])?,
                    table.require(&[&format!("Image_PathName_{channel}")])?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;

        let mut fields = Vec::with_capacity(table.n_rows());
        let mut n_unannotated_dropped = 0;
        let mut n_other_plates = 0;
        let mut sites_seen: HashMap<(String, String), i32> = HashMap::new();
        let mut paths_seen: HashMap<Vec<PathBuf>, u64> = HashMap::new();
        let shard_plates = match options.shard {
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
        for row in table.rows() {
            let plate_name = row.text(&plate)?.to_string();
            let outside_shard = shard_plates
                .as_ref()
                .is_some_and(|selected| !selected.contains(&plate_name));
            if outside_shard
                || (!options.plates.is_empty() && !options.plates.contains(&plate_name))
            {
                n_other_plates += 1;
                continue;
            }
            let compound_name = row.text(&compound)?.to_string();
            let concentration_value = row.number(&concentration)?;
            let moa = match options.moa {
                None => None,
                Some(moa_table) => match moa_table.moa(&compound_name, concentration_value) {
                    Some(moa) => Some(moa.to_string()),
                    None => match options.unannotated {
                        Unannotated::Drop => {
                            n_unannotated_dropped += 1;
                            continue;
                        }
                        Unannotated::Keep => None,
                        Unannotated::Error => {
                            return Err(PreprocessError::NoMoa {
                                path: path.to_path_buf(),
                                line: row.line,
                                compound: compound_name,
                                concentration: concentration_value,
                                moa_path: moa_table.path().to_path_buf(),
                            })
                        }
                    },
                },
            };
            let mut channel_paths = Vec::with_capacity(channel_columns.len());
            for (file_column, folder_column) in &channel_columns {
                let file_name = row.text(file_column)?;
                let folder = row.text(folder_column)?;
                // Images are read from inside --images-root: no absolute folder, no `..`
                // (unless --allow-outside-root, for LoadData tables with absolute paths).
                if !options.allow_outside_root {
                    for (column, part) in [(folder_column, folder), (file_column, file_name)] {
                        if phenoflow_schemas::leaves_its_root(Path::new(part)) {
                            return Err(row.error(
                                column,
                                format!(
                                    "`{part}` leads outside --images-root {} (an absolute path or `..`); \
                                     pass --allow-outside-root to read it anyway",
                                    options.images_root.display()
                                ),
                            ));
                        }
                    }
                }
                channel_paths.push(options.images_root.join(folder).join(file_name));
            }
            // The same images twice would give every cell twice.
            if let Some(first_line) = paths_seen.insert(channel_paths.clone(), row.line) {
                return Err(row.error(
                    &channel_columns[0].0,
                    format!(
                        "the same images as line {first_line}: duplicate rows would give duplicate cells"
                    ),
                ));
            }
            let well_name = row.text(&well)?.to_string();
            // BBBC021 has no site column: the site is written in the file name (`_s1_`). Failing
            // both, sites are numbered in table order within each well.
            let site_number = match &site {
                Some(column) => row.integer(column)? as i32,
                None => {
                    let first_file = channel_columns
                        .first()
                        .map(|(file_column, _)| row.text(file_column))
                        .transpose()?
                        .unwrap_or("");
                    match site_from_file_name(first_file) {
                        Some(site) => site,
                        None => {
                            let counter = sites_seen
                                .entry((plate_name.clone(), well_name.clone()))
                                .or_insert(0);
                            *counter += 1;
                            *counter
                        }
                    }
                }
            };
            fields.push(FieldRecord {
                line: row.line,
                batch: batch_of_plate(&plate_name),
                plate: plate_name,
                well: well_name,
                site: site_number,
                compound: compound_name,
                concentration: concentration_value,
                moa,
                table_number: row.optional_integer(table_number.as_ref())?,
                image_number: row.optional_integer(image_number.as_ref())?,
                channel_paths,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            fields,
            n_rows: table.n_rows(),
            n_unannotated_dropped,
            n_other_plates,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use phenoflow_schemas::concentration_key;

    fn shared_data() -> PathBuf {
        std::env::var_os("PHENOFLOW_SHARED_DATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
    }

    fn bbbc021_channels() -> Vec<String> {
        ["DAPI", "Actin", "Tubulin"].map(String::from).to_vec()
    }

    #[test]
    fn published_moa_table_has_103_treatments_plus_dmso() {
        let moa = MoaTable::read(&shared_data().join("bbbc021/BBBC021_v1_moa.csv")).unwrap();
        assert_eq!(moa.len(), 104);
        let compounds: BTreeSet<&str> = moa.treatments().map(|t| t.0).collect();
        let moas: BTreeSet<&str> = moa.treatments().map(|t| t.2).collect();
        assert_eq!(compounds.len(), 39, "38 compounds + DMSO");
        assert_eq!(moas.len(), 13, "12 MoAs + DMSO");
        assert_eq!(moa.moa("DMSO", 0.0), Some("DMSO"));
        assert_eq!(
            moa.moa("docetaxel", 0.030000),
            Some("Microtubule stabilizers")
        );
        assert_eq!(moa.moa("docetaxel", 0.003), None);
    }

    #[test]
    fn published_image_table_joins_on_numeric_concentration() {
        let data = shared_data().join("bbbc021");
        let moa = MoaTable::read(&data.join("BBBC021_v1_moa.csv")).unwrap();
        let channels = bbbc021_channels();
        let mut options = ImageTableOptions {
            channels: &channels,
            images_root: &data,
            allow_outside_root: false,
            moa: None,
            unannotated: Unannotated::Keep,
            plates: &[],
            shard: None,
        };
        let all = ImageTable::read(&data.join("BBBC021_v1_image.csv"), &options).unwrap();
        assert_eq!(all.fields.len(), 13_200);
        let plates: BTreeSet<&str> = all.fields.iter().map(|f| f.plate.as_str()).collect();
        let batches: BTreeSet<&str> = all.fields.iter().map(|f| f.batch.as_str()).collect();
        assert_eq!((plates.len(), batches.len()), (55, 10));
        assert!(all.fields.iter().all(|f| (1..=4).contains(&f.site)));

        options.moa = Some(&moa);
        options.unannotated = Unannotated::Drop;
        let annotated = ImageTable::read(&data.join("BBBC021_v1_image.csv"), &options).unwrap();
        assert_eq!(annotated.fields.len(), 3_848);
        assert_eq!(annotated.n_unannotated_dropped, 13_200 - 3_848);
        let treatments: BTreeSet<(String, i64)> = annotated
            .fields
            .iter()
            .map(|f| (f.compound.clone(), concentration_key(f.concentration)))
            .collect();
        assert_eq!(
            treatments.len(),
            104,
            "103 treatments + DMSO are all imaged"
        );
        let first = &annotated.fields[0];
        let expected_folder = format!("{}/{}", first.batch, first.plate);
        assert!(first.channel_paths[0]
            .to_string_lossy()
            .contains(&expected_folder));

        options.unannotated = Unannotated::Error;
        let error = ImageTable::read(&data.join("BBBC021_v1_image.csv"), &options)
            .unwrap_err()
            .to_string();
        assert!(error.contains("BBBC021_v1_image.csv: line 2:"), "{error}");
        assert!(error.contains("(5-fluorouracil, 0.003)"), "{error}");
    }

    #[test]
    fn site_parsing() {
        assert_eq!(site_from_file_name("G10_s1_w1BEDC2073.tif"), Some(1));
        assert_eq!(site_from_file_name("Week1_B02_s4_w2X.tif"), Some(4));
        assert_eq!(site_from_file_name("image.tif"), None);
    }
}
