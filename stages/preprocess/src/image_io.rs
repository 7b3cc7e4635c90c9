//! Reading raw pixels: single-channel 8- or 16-bit TIFFs (BBBC021 fields are 16-bit uncompressed,
//! CellProfiler's examples 8-bit PackBits) and numpy `.npy` arrays (the pre-cropped DTU layout:
//! `<u2`, HWC). Pixels are returned as `u16` without any rescaling, so raw intensities survive.

use std::io::{BufReader, Read};
use std::path::Path;

use tiff::decoder::{Decoder, DecodingResult};
use tiff::ColorType;

use crate::error::{PreprocessError, Result};

/// A single-channel image, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct GrayImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u16>,
}

impl GrayImage {
    pub fn get(&self, x: usize, y: usize) -> u16 {
        self.pixels[y * self.width + x]
    }
}

/// Decodes the first page of a grayscale TIFF.
pub fn read_tiff(path: &Path) -> Result<GrayImage> {
    let tiff_error = |reason: String| PreprocessError::Tiff {
        path: path.to_path_buf(),
        reason,
    };
    let file =
        phenoflow_schemas::open_regular_file(path).map_err(|source| PreprocessError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let mut decoder =
        Decoder::new(BufReader::new(file)).map_err(|error| tiff_error(error.to_string()))?;
    let (width, height) = decoder
        .dimensions()
        .map_err(|error| tiff_error(error.to_string()))?;
    let color_type = decoder
        .colortype()
        .map_err(|error| tiff_error(error.to_string()))?;
    if !matches!(color_type, ColorType::Gray(8) | ColorType::Gray(16)) {
        return Err(PreprocessError::PixelType {
            path: path.to_path_buf(),
            found: format!("{color_type:?}"),
        });
    }
    let pixels = match decoder
        .read_image()
        .map_err(|error| tiff_error(error.to_string()))?
    {
        DecodingResult::U8(values) => values.into_iter().map(u16::from).collect(),
        DecodingResult::U16(values) => values,
        _ => {
            return Err(PreprocessError::PixelType {
                path: path.to_path_buf(),
                found: format!("{color_type:?}"),
            })
        }
    };
    let (width, height) = (width as usize, height as usize);
    if pixels.len() != width * height {
        return Err(tiff_error(format!(
            "decoded {} pixels for a {width}x{height} image",
            pixels.len()
        )));
    }
    Ok(GrayImage {
        width,
        height,
        pixels,
    })
}

/// A `uint16` array read from a `.npy` file, with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub values: Vec<u16>,
}

/// Reads a numpy `.npy` file (format 1.0, 2.0 or 3.0) holding a C-ordered little-endian `uint16`
/// array. Anything else (another dtype, Fortran order, object arrays) is an error naming the file.
pub fn read_npy_u16(path: &Path) -> Result<NpyArray> {
    let npy_error = |reason: String| PreprocessError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = Vec::new();
    phenoflow_schemas::open_regular_file(path)
        .and_then(|mut file| file.read_to_end(&mut bytes))
        .map_err(|source| PreprocessError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(npy_error("no numpy magic string (not a .npy file)".into()));
    }
    let major_version = bytes[6];
    let (header_len, header_start) = match major_version {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        other => return Err(npy_error(format!("unsupported format version {other}"))),
    };
    let data_start = header_start + header_len;
    let header = bytes
        .get(header_start..data_start)
        .ok_or_else(|| npy_error("truncated header".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| npy_error("header is not text".into()))?;
    let descr = header_value(header, "descr")
        .ok_or_else(|| npy_error(format!("header has no `descr`: {header}")))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    if descr != "<u2" && descr != "=u2" {
        return Err(npy_error(format!(
            "dtype `{descr}`, expected `<u2` (uint16)"
        )));
    }
    let fortran_order = header_value(header, "fortran_order")
        .ok_or_else(|| npy_error(format!("header has no `fortran_order`: {header}")))?;
    if fortran_order != "False" {
        return Err(npy_error("Fortran-ordered array; expected C order".into()));
    }
    let shape_text = header_value(header, "shape")
        .ok_or_else(|| npy_error(format!("header has no `shape`: {header}")))?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse()
                .map_err(|_| npy_error(format!("bad shape `{shape_text}`")))
        })
        .collect::<Result<_>>()?;
    let data = &bytes[data_start..];
    let n_bytes = shape
        .iter()
        .try_fold(2usize, |bytes, &extent| bytes.checked_mul(extent));
    if n_bytes != Some(data.len()) {
        return Err(npy_error(match n_bytes {
            Some(n_bytes) => format!(
                "shape {shape:?} needs {n_bytes} data bytes but the file has {} (truncated?)",
                data.len()
            ),
            None => format!("shape {shape:?} is larger than any file can hold"),
        }));
    }
    let values = data
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    Ok(NpyArray { shape, values })
}

/// The raw text of `key`'s value in a numpy header dict such as
/// `{'descr': '<u2', 'fortran_order': False, 'shape': (68, 68, 3), }`.
fn header_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let key_start = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let after_key = &header[key_start + key.len() + 2..];
    let value = after_key.trim_start().strip_prefix(':')?.trim_start();
    let end = if value.starts_with('(') {
        value.find(')')? + 1
    } else {
        value.find([',', '}'])?
    };
    Some(value[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn reads_uint16_npy() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("a.npy");
        write_npy(&path, "<u2", "(2, 1, 2)", &[1, 0, 2, 0, 0, 1, 255, 255]);
        let array = read_npy_u16(&path).unwrap();
        assert_eq!(array.shape, vec![2, 1, 2]);
        assert_eq!(array.values, vec![1, 2, 256, 65535]);
    }

    #[test]
    fn rejects_wrong_dtype_and_truncation() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("f.npy");
        write_npy(&path, "<f4", "(1,)", &[0, 0, 0, 0]);
        let error = read_npy_u16(&path).unwrap_err().to_string();
        assert!(
            error.contains("f.npy") && error.contains("`<f4`"),
            "{error}"
        );
        write_npy(&path, "<u2", "(4,)", &[0, 0, 0]);
        let error = read_npy_u16(&path).unwrap_err().to_string();
        assert!(error.contains("truncated"), "{error}");
    }

    #[test]
    fn truncated_tiff_is_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("t.tif");
        std::fs::write(&path, b"II*\x00\x08\x00\x00\x00\x01").unwrap();
        let error = read_tiff(&path).unwrap_err().to_string();
        assert!(error.starts_with(&path.display().to_string()), "{error}");
        assert!(error.contains("not a readable TIFF"), "{error}");
    }
}
