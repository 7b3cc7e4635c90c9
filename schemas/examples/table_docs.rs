//! `make table-docs`: rewrites the column tables of `schemas/tables/*.md` from the table specs
//! (`phenoflow_schemas::tables`), keeping each page's prose; a unit test fails when they differ.

use phenoflow_schemas::tables::{update_table_page, TableKind};

fn main() -> Result<(), String> {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tables");
    for kind in TableKind::ALL {
        let path = folder.join(format!("{}.md", kind.name()));
        let page =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let updated = update_table_page(kind, &page)?;
        if updated != page {
            std::fs::write(&path, updated).map_err(|e| format!("{}: {e}", path.display()))?;
            println!("table-docs: rewrote {}", path.display());
        }
    }
    Ok(())
}
