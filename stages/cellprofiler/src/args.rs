//! Command-line interface of `pf-cellprofiler` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "pf-cellprofiler",
    version,
    about = "CellProfiler single-cell tables (CSV, SQLite, CytoTable Parquet) → one row per cell",
    long_about = "Read a CellProfiler screen's single-cell measurements as CellProfiler wrote them and merge its \
                  compartments into one row per cell, the way pycytominer's SingleCells does: each cytoplasm is \
                  joined to the cell and the nucleus it names (Parent_Cells, Parent_Nuclei), features are \
                  prefixed Cells_ / Cytoplasm_ / Nuclei_, and the image's metadata becomes Metadata_* columns. \
                  The input is read image by image (memory stays flat in the file's size) and the \
                  `single_cells` table is written atomically; pf-aggregate takes it from there (median per \
                  well, a plate map for the treatments, normalisation, feature selection).",
    after_long_help = "Examples:\n  \
        pf-cellprofiler --sqlite plate1.sqlite --output single_cells.parquet\n  \
        pf-cellprofiler --csv-dir cp_output/ --output single_cells.parquet\n  \
        pf-cellprofiler --csv-dir cp_output/ --csv-prefix MyExpt_ --output single_cells.parquet\n  \
        pf-cellprofiler --cytotable plate1.parquet --output single_cells.parquet\n  \
        pf-aggregate --input single_cells.parquet --cell-aggregation median --platemap platemap.csv \\\n      \
            --moa-csv moa.csv --wells wells.parquet --treatments treatments.parquet"
)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["sqlite", "csv_dir", "cytotable"])))]
pub struct Cli {
    /// An ExportToDatabase SQLite backend: `Per_Image` and `Per_<Compartment>` tables with
    /// prefixed columns, objects keyed by ImageNumber + `<Compartment>_Number_Object_Number`.
    #[arg(long, value_name = "FILE")]
    pub sqlite: Option<PathBuf>,

    /// A folder of ExportToSpreadsheet CSVs: `Image.csv`, `Cells.csv`, `Cytoplasm.csv`,
    /// `Nuclei.csv` (unprefixed columns, ImageNumber + ObjectNumber, Parent_* links), each sorted
    /// by ImageNumber as CellProfiler writes them.
    #[arg(long, value_name = "DIR")]
    pub csv_dir: Option<PathBuf>,

    /// The file-name prefix of the CSVs (ExportToSpreadsheet's "Add a prefix to file names"),
    /// e.g. `MyExpt_` for `MyExpt_Image.csv`.
    #[arg(long, default_value = "", requires = "csv_dir")]
    pub csv_prefix: String,

    /// A CytoTable Parquet file (already one row per cell: `Metadata_ImageNumber`,
    /// `Image_Metadata_*`, `Cells_*`, `Cytoplasm_*`, `Nuclei_*`).
    #[arg(long, value_name = "FILE")]
    pub cytotable: Option<PathBuf>,

    /// The SQLite backend's table-name prefix (`Per_` in `Per_Image`, `Per_Cells`).
    #[arg(long, default_value = "Per_", requires = "sqlite")]
    pub table_prefix: String,

    /// How long to wait for a SQLite file that another process holds locked, in milliseconds,
    /// before giving up.
    #[arg(long, default_value_t = 2000, requires = "sqlite", value_parser = clap::value_parser!(u32).range(0..=600_000))]
    pub busy_timeout_ms: u32,

    /// The image metadata column naming the plate (after `Image_` is dropped from SQLite names).
    #[arg(long, default_value = phenoflow_schemas::columns::PLATE)]
    pub plate_column: String,

    /// The image metadata column naming the well.
    #[arg(long, default_value = phenoflow_schemas::columns::WELL)]
    pub well_column: String,

    /// Where to write the `single_cells` table.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,

    #[command(flatten)]
    pub progress: phenoflow_kit::ProgressArgs,
}
