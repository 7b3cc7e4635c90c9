//! The MoA table: which mechanism of action each treatment (compound, concentration) has, as in
//! BBBC021's `BBBC021_v1_moa.csv` (`compound,concentration,moa`). One reader for every stage
//! (pf-preprocess annotates fields with it, pf-aggregate wells): columns found by their usual
//! names in any case (`compound` / `Metadata_Compound`, …), a byte-order mark and CR, LF or CRLF
//! line endings allowed, concentrations matched as numbers to 1e-6 (`1` and `1.0` are one
//! treatment), and errors that name the file, the line (as an editor counts it) and the column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{concentration_key, SchemaError};

/// The accepted names of each column, compared without case.
const COMPOUND: [&str; 2] = ["compound", "metadata_compound"];
const CONCENTRATION: [&str; 2] = ["concentration", "metadata_concentration"];
const MOA: [&str; 2] = ["moa", "metadata_moa"];

/// The largest MoA table read.
const MAX_BYTES: u64 = 64 << 20;

/// Lines (from 1, as an editor counts them: CR, LF and CRLF each end one) of records read in
/// order, counted once over the file: each call goes on from where the last one stopped.
#[derive(Debug, Default)]
struct LineCounter {
    /// Bytes counted so far, and the line breaks among them.
    counted: usize,
    breaks: usize,
}

impl LineCounter {
    /// The line of the record at a byte offset (the CSV reader's offset may fall before blank
    /// lines it skipped; offsets only grow).
    fn line_of(&mut self, bytes: &[u8], offset: usize) -> usize {
        let start = bytes
            .iter()
            .skip(offset)
            .position(|&byte| byte != b'\r' && byte != b'\n')
            .map_or(bytes.len(), |skipped| offset + skipped);
        if start > self.counted {
            self.breaks += bytes[self.counted..start]
                .iter()
                .enumerate()
                .filter(|&(index, &byte)| {
                    byte == b'\n'
                        || (byte == b'\r' && bytes.get(self.counted + index + 1) != Some(&b'\n'))
                })
                .count();
            self.counted = start;
        }
        1 + self.breaks
    }
}

/// Treatments keyed by compound and concentration (to 1e-6), with their MoA.
#[derive(Debug, Clone)]
pub struct MoaTable {
    path: PathBuf,
    moa: BTreeMap<(String, i64), String>,
}

impl MoaTable {
    /// Reads a MoA table; a missing column, an empty or non-numeric value, a treatment given two
    /// MoAs, or a table without rows is bad input naming the file (and the line).
    pub fn read(path: &Path) -> Result<Self, SchemaError> {
        let bad = |reason: String| SchemaError::BadMoaTable {
            path: path.to_path_buf(),
            reason,
        };
        // An unreadable file keeps its I/O error: not found is bad input, a failing disk is not.
        let io = |source: std::io::Error| SchemaError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = crate::open_regular_file(path).map_err(io)?;
        // A MoA table holds a line per treatment (BBBC021's: 104); anything far larger is not one.
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_BYTES + 1), &mut bytes)
            .map_err(io)?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(bad(format!(
                "larger than {} MiB: not a MoA table",
                MAX_BYTES >> 20
            )));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(&bytes[..]);
        let header: Vec<String> = reader
            .headers()
            .map_err(|error| bad(format!("not a CSV table: {error}")))?
            .iter()
            .map(|name| name.trim_start_matches('\u{feff}').trim().to_lowercase())
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(bad("empty file: no header line".into()));
        }
        let column = |names: [&str; 2]| {
            header
                .iter()
                .position(|name| names.contains(&name.as_str()))
                .ok_or_else(|| {
                    bad(format!(
                        "no `{}` column (the columns are {})",
                        names[0],
                        header.join(", ")
                    ))
                })
        };
        let (compound, concentration, moa) =
            (column(COMPOUND)?, column(CONCENTRATION)?, column(MOA)?);
        let mut table = BTreeMap::new();
        let mut lines = LineCounter::default();
        for record in reader.records() {
            let record = record.map_err(|error| bad(format!("not a CSV table: {error}")))?;
            let line = lines.line_of(&bytes, record.position().map_or(0, |p| p.byte()) as usize);
            if record.iter().all(str::is_empty) {
                continue;
            }
            let value = |index: usize, name: &str| -> Result<&str, SchemaError> {
                match record.get(index).unwrap_or("") {
                    "" => Err(bad(format!("line {line}: `{name}` is empty"))),
                    text => Ok(text),
                }
            };
            let compound_name = value(compound, "compound")?;
            let concentration_text = value(concentration, "concentration")?;
            let concentration_value: f64 = concentration_text
                .parse()
                .ok()
                .filter(|number: &f64| number.is_finite())
                .ok_or_else(|| {
                    bad(format!(
                        "line {line}: concentration `{concentration_text}` is not a number"
                    ))
                })?;
            let moa_name = value(moa, "moa")?;
            let key = (
                compound_name.to_string(),
                concentration_key(concentration_value),
            );
            if let Some(other) = table.get(&key) {
                if other != moa_name {
                    return Err(bad(format!(
                        "line {line}: ({compound_name}, {concentration_text}) is `{moa_name}` here but `{other}` on an earlier line"
                    )));
                }
            }
            table.insert(key, moa_name.to_string());
        }
        if table.is_empty() {
            return Err(bad("the MoA table has no rows".into()));
        }
        Ok(Self {
            path: path.to_path_buf(),
            moa: table,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The MoA of a treatment, if the table has it.
    pub fn moa(&self, compound: &str, concentration: f64) -> Option<&str> {
        self.moa
            .get(&(compound.to_string(), concentration_key(concentration)))
            .map(String::as_str)
    }

    /// Number of treatments.
    pub fn len(&self) -> usize {
        self.moa.len()
    }

    /// Never true: a table without rows is refused when read.
    pub fn is_empty(&self) -> bool {
        self.moa.is_empty()
    }

    /// (compound, concentration, MoA) of every treatment, by compound and concentration.
    pub fn treatments(&self) -> impl Iterator<Item = (&str, f64, &str)> {
        self.moa
            .iter()
            .map(|((compound, key), moa)| (compound.as_str(), *key as f64 / 1e6, moa.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<MoaTable, SchemaError> {
        let folder = tempfile::tempdir().unwrap();
        let path = folder.path().join("moa.csv");
        std::fs::write(&path, text).unwrap();
        MoaTable::read(&path)
    }

    #[test]
    fn any_line_ending_a_bom_quotes_and_metadata_names_are_read() {
        for text in [
            "compound,concentration,moa\r\nDMSO,0,DMSO\r\n\"ICI-182,780\",1,Protein synthesis\r\n",
            "compound,concentration,moa\rDMSO,0,DMSO\r\"ICI-182,780\",1.0,Protein synthesis",
            "\u{feff}Metadata_Compound,Metadata_Concentration,Metadata_MoA\nDMSO,0,DMSO\n\"ICI-182,780\",1,Protein synthesis\n\n",
        ] {
            let table = read(text).unwrap();
            assert_eq!(table.len(), 2, "{text:?}");
            assert_eq!(table.moa("ICI-182,780", 1.0), Some("Protein synthesis"));
            assert_eq!(table.moa("DMSO", 0.0), Some("DMSO"));
        }
    }

    #[test]
    fn errors_name_the_line_as_an_editor_counts_it() {
        let error =
            read("compound,concentration,moa\nDMSO,0,DMSO\ntaxol,1,Microtubule\ntaxol,1.0,Actin\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("line 4") && error.contains("Actin") && error.contains("Microtubule"),
            "{error}"
        );
        let error = read("compound,concentration,moa\r\n\r\nDMSO,x,DMSO\r\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 3") && error.contains("`x` is not a number"),
            "{error}"
        );
        let error = read("compound,dose,moa\nDMSO,0,DMSO\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no `concentration` column"), "{error}");
        let error = read("compound,concentration,moa\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no rows"), "{error}");
        let mut huge = String::from("compound,concentration,moa\n");
        huge.push_str(&"x".repeat((MAX_BYTES + 1) as usize));
        let error = read(&huge).unwrap_err().to_string();
        assert!(error.contains("not a MoA table"), "{error}");
        let error = read("compound,concentration,moa\n,0,DMSO\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("line 2") && error.contains("`compound` is empty"),
            "{error}"
        );
    }
}
