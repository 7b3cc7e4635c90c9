//! The names of the key columns the tables share (`Metadata_*`, as CellProfiler and pycytominer
//! name them), defined once: the table specs (`tables.rs`) and every stage use these constants,
//! and the tidy test refuses a `"Metadata_…"` literal in a stage (pf-cellprofiler's list of
//! CytoTable's spellings aside).

/// What every key column's name starts with; other columns are features.
pub const PREFIX: &str = "Metadata_";

pub const PLATE: &str = "Metadata_Plate";
pub const WELL: &str = "Metadata_Well";
pub const SITE: &str = "Metadata_Site";
pub const COMPOUND: &str = "Metadata_Compound";
pub const CONCENTRATION: &str = "Metadata_Concentration";
pub const MOA: &str = "Metadata_MoA";
pub const BATCH: &str = "Metadata_Batch";
pub const IMAGE_NUMBER: &str = "Metadata_ImageNumber";
pub const OBJECT_NUMBER: &str = "Metadata_ObjectNumber";
pub const TABLE_NUMBER: &str = "Metadata_TableNumber";
pub const LOCATION_CENTER_X: &str = "Metadata_Location_Center_X";
pub const LOCATION_CENTER_Y: &str = "Metadata_Location_Center_Y";
/// Cells aggregated into a well (`wells`), wells into a treatment (`treatments`).
pub const COUNT_CELLS: &str = "Metadata_Count_Cells";
pub const COUNT_WELLS: &str = "Metadata_Count_Wells";
/// A single cell's cytoplasm and nucleus object numbers (`single_cells`).
pub const CYTOPLASM_NUMBER: &str = "Metadata_Cytoplasm_Number_Object_Number";
pub const NUCLEUS_NUMBER: &str = "Metadata_Nuclei_Number_Object_Number";

/// Other tools' spellings the stages also recognise: pycytominer's plate maps' well column, the
/// DTU seed's `metadata.csv` MoA column.
pub const WELL_POSITION: &str = "Metadata_well_position";
pub const MOA_LOWERCASE: &str = "Metadata_moa";
