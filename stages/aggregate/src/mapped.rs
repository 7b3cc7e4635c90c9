//! Parquet cells read through memory mappings, one byte range at a time: the direct reader
//! (`means.rs`) maps the span of each row group's columns while it decodes it, and the content
//! hash of the provenance maps each input in windows of [`HASH_WINDOW`] bytes. Pages are sliced
//! out of the page cache, never copied: read through `read(2)`, the hash and the decoders each
//! copied the whole file (a third of `pf-aggregate`'s CPU on 500k cells, most of it system
//! time). Only the ranges in use are mapped (a mapping of 1 MiB or more is unmapped on Polars'
//! unmapping thread once its last reader is dropped), so the file is never resident at once;
//! mapping the whole file made the resident set 1.2× the table (0.12× without the file's pages)
//! for the same time. Where a range cannot be mapped, it is read into memory instead.
//!
//! The mapping is Polars' own (`polars_utils::mmap`, the one its Parquet reader uses), so this
//! stage holds no unsafe code of its own. As with Polars, a file truncated by another program
//! while this stage reads it ends the process (`SIGBUS`) rather than with an error; the direct
//! reader maps from the handle it read the footer through, and checks the length first.

use std::fs::File;
use std::path::Path;

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};
use polars_utils::mmap::MMapSemaphore;

/// The hash's window: small enough that the file is not resident at once, large enough that
/// mapping and unmapping cost nothing beside the hashing.
const HASH_WINDOW: u64 = 32 << 20;

/// Where mappings start: a multiple of 64 KiB and of the machine's page size. `polars_utils`
/// unmaps a mapping of more than 32 MiB in pieces from the address the mapping gives, which is
/// where it starts only for an offset on a page boundary: from anywhere else the unmapping
/// failed and every row group stayed mapped.
fn map_align() -> u64 {
    (64u64 << 10).max(*polars_utils::mem::PAGE_SIZE as u64)
}

/// `length` bytes of a file from `offset`, mapped, with the bytes before `offset` back to the
/// nearest [`map_align`] boundary: the mapping and the offset of its first byte; `None` where
/// the file cannot be mapped (not a regular file, say).
pub(crate) fn map_range(file: &File, offset: u64, length: u64) -> Option<(u64, Bytes)> {
    let start = offset - offset % map_align();
    let length = length.checked_add(offset - start)?;
    if length == 0 {
        return Some((start, Bytes::new()));
    }
    let mut options = memmap2::MmapOptions::new();
    options.offset(start).len(usize::try_from(length).ok()?);
    let map = MMapSemaphore::new_from_file_with_options(file, options).ok()?;
    Some((start, Bytes::from_owner(map)))
}

/// [`map_range`], or where that fails the same bytes read into memory (from `offset` itself).
pub(crate) fn map_or_read_range(
    file: &File,
    offset: u64,
    length: u64,
) -> std::io::Result<(u64, Bytes)> {
    match map_range(file, offset, length) {
        Some(mapped) => Ok(mapped),
        None => read_range(file, offset, length),
    }
}

fn read_range(file: &File, offset: u64, length: u64) -> std::io::Result<(u64, Bytes)> {
    let mut bytes = vec![0u8; usize::try_from(length).map_err(std::io::Error::other)?];
    std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, offset)?;
    Ok((offset, Bytes::from(bytes)))
}

/// The content hash of a regular file ([`phenoflow_schemas::hash_file`]'s), read through
/// mapped windows; `None` where a window cannot be mapped (the caller streams the file then).
pub(crate) fn hash_mapped(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let metadata = file.metadata().ok()?;
    if !metadata.is_file() {
        return None;
    }
    let mut hasher = phenoflow_schemas::ContentHasher::default();
    let mut offset = 0;
    while offset < metadata.len() {
        let length = HASH_WINDOW.min(metadata.len() - offset);
        hasher.update(&map_range(&file, offset, length)?.1);
        offset += length;
    }
    Some(hasher.finish())
}

/// A mapped byte range of a Parquet file, read as the whole file is (offsets are the file's):
/// one row group's column chunks, for arrow-rs's reader.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) offset: u64,
    pub(crate) bytes: Bytes,
    /// The whole file's length.
    pub(crate) file_length: u64,
}

impl Window {
    fn slice(&self, start: u64, length: u64) -> parquet::errors::Result<Bytes> {
        let end = start.checked_add(length);
        if start < self.offset || end.is_none_or(|end| end > self.offset + self.bytes.len() as u64)
        {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "{length} bytes at offset {start} are outside the row group's bytes ({} at offset {})",
                self.bytes.len(),
                self.offset
            )));
        }
        let from = (start - self.offset) as usize;
        Ok(self.bytes.slice(from..from + length as usize))
    }
}

impl Length for Window {
    fn len(&self) -> u64 {
        self.file_length
    }
}

impl ChunkReader for Window {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        let to_end = (self.offset + self.bytes.len() as u64).saturating_sub(start);
        Ok(bytes::Buf::reader(self.slice(start, to_end)?))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, length as u64)
    }
}

/// Reads what `read` gives into memory: for tests of [`Window`].
#[cfg(test)]
fn read_all(mut read: impl std::io::Read) -> Vec<u8> {
    let mut bytes = Vec::new();
    read.read_to_end(&mut bytes).unwrap();
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_hash_is_the_streamed_hash_and_windows_read_as_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("content.bin");
        // Over two hash windows, not a multiple of one.
        let content: Vec<u8> = (0..(HASH_WINDOW as usize * 2 + 12345))
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        std::fs::write(&path, &content).unwrap();
        assert_eq!(
            hash_mapped(&path).unwrap(),
            phenoflow_schemas::hash_file(&path).unwrap()
        );
        let empty = directory.path().join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(
            hash_mapped(&empty).unwrap(),
            phenoflow_schemas::hash_file(&empty).unwrap()
        );

        let file = File::open(&path).unwrap();
        let (offset, bytes) = map_range(&file, 70000, 5000).unwrap();
        assert_eq!((offset, bytes.len()), (65536, 9464));
        assert_eq!(
            map_or_read_range(&file, 70000, 5000).unwrap(),
            (offset, bytes.clone())
        );
        // The fallback reads the same bytes, from the offset asked for, and no further than
        // the file goes.
        let (read_offset, read) = read_range(&file, 70000, 5000).unwrap();
        assert_eq!(read_offset, 70000);
        assert_eq!(&read[..], &bytes[(70000 - 65536)..]);
        assert!(read_range(&file, content.len() as u64 - 10, 20).is_err());
        let window = Window {
            offset,
            bytes,
            file_length: content.len() as u64,
        };
        assert_eq!(window.len(), content.len() as u64);
        assert_eq!(
            &window.get_bytes(70000, 100).unwrap()[..],
            &content[70000..70100]
        );
        assert_eq!(
            read_all(window.get_read(74000).unwrap()),
            &content[74000..75000]
        );
        assert!(window.get_bytes(65535, 10).is_err());
        assert!(window.get_bytes(74999, 2).is_err());
        assert!(window.get_bytes(u64::MAX - 1, 10).is_err());
        assert!(window.get_read(75001).is_err());
    }
}
