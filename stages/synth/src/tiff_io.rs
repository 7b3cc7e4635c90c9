//! Writing the synthetic fields as 16-bit greyscale TIFFs, as the microscope files of BBBC021 (and
//! CPJUMP1) are.

use std::io::BufWriter;
use std::path::Path;

use anyhow::Context;

pub(crate) fn write_tiff(
    path: &Path,
    width: usize,
    height: usize,
    pixels: &[u16],
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut encoder = tiff::encoder::TiffEncoder::new(BufWriter::new(file))
        .with_context(|| format!("writing {}", path.display()))?;
    encoder
        .write_image::<tiff::encoder::colortype::Gray16>(width as u32, height as u32, pixels)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
