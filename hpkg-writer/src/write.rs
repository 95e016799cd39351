//! The heap and the file, as `PackageWriterImpl::_Finish` and `PackageFileHeapWriter`
//! (src/kits/package/hpkg/PackageWriterImpl.cpp, PackageFileHeapWriter.cpp) write them.
//!
//! The uncompressed heap is the file data (in TOC order), then the TOC section, then the
//! package attributes section. It is cut into 64 KiB chunks; each chunk of at least 64
//! bytes is compressed on its own and stored compressed only if that is shorter, else as it
//! is. After the chunks comes the chunk size table: for every chunk but the last, its
//! stored size minus one as a big-endian u16 (the last one's size is what remains); it is
//! left out when the heap is not compressed or has fewer than two chunks. The header's
//! `heap_size_compressed` counts the table. Header fields are big endian; the header's
//! `reserved1`, which Haiku's writer never sets, is 0 here.

use crate::attr::encode_section;
use crate::format::{self, compression, CHUNK_SIZE, HEADER_SIZE};
use crate::info::PackageInfo;
use crate::tree::{toc_attrs, Entry};

/// The heap compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Zlib,
    Zstd,
}

impl Compression {
    /// `B_HPKG_COMPRESSION_*`.
    pub fn code(self) -> u16 {
        match self {
            Compression::None => compression::NONE,
            Compression::Zlib => compression::ZLIB,
            Compression::Zstd => compression::ZSTD,
        }
    }
}

/// How to write. The default is what `package create` does with no options: zstd
/// (src/bin/package/package.cpp `parse_compression_argument` picks zstd when the package
/// tool is built with the zstd build feature, which src/bin/package/Jamfile sets whenever
/// it is enabled, as it is on Haiku's own builds) at level 9, `B_HPKG_COMPRESSION_LEVEL_BEST`
/// (src/bin/package/command_create.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub compression: Compression,
    /// Haiku's level, 1..=9, scaled as `WriterImplBase::InitHeapReader` does: zlib
    /// `level / 9 * 9`, zstd `level / 9 * 22` (`B_ZSTD_COMPRESSION_BEST`), truncated.
    pub level: u8,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            compression: Compression::Zstd,
            level: 9,
        }
    }
}

/// A package: its attributes and its files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Package {
    pub info: PackageInfo,
    pub entries: Vec<Entry>,
}

/// Why a package cannot be written.
#[derive(Debug)]
pub enum WriteError {
    /// A field the format cannot hold (e.g. a section over 4 GiB, a level out of range).
    Invalid(String),
    Compress(std::io::Error),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            WriteError::Invalid(m) => f.write_str(m),
            WriteError::Compress(e) => write!(f, "compressing the heap: {e}"),
        }
    }
}

impl std::error::Error for WriteError {}

fn compress_chunk(chunk: &[u8], opts: Options) -> Result<Option<Vec<u8>>, WriteError> {
    if chunk.len() < format::COMPRESSION_THRESHOLD {
        return Ok(None);
    }
    let level = f32::from(opts.level) / 9.0;
    let packed = match opts.compression {
        Compression::None => return Ok(None),
        Compression::Zlib => {
            use std::io::Write;
            let mut z = flate2::write::ZlibEncoder::new(
                Vec::new(),
                flate2::Compression::new((level * 9.0) as u32),
            );
            z.write_all(chunk).map_err(WriteError::Compress)?;
            z.finish().map_err(WriteError::Compress)?
        }
        Compression::Zstd => {
            zstd::bulk::compress(chunk, (level * 22.0) as i32).map_err(WriteError::Compress)?
        }
    };
    // Haiku compresses into a buffer the chunk's size and keeps the result only when it
    // is shorter.
    Ok((packed.len() < chunk.len()).then_some(packed))
}

/// The stored heap (chunks, then the size table) of an uncompressed heap.
pub fn compress_heap(heap: &[u8], opts: Options) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    for chunk in heap.chunks(CHUNK_SIZE) {
        let start = out.len();
        match compress_chunk(chunk, opts)? {
            Some(packed) => out.extend_from_slice(&packed),
            None => out.extend_from_slice(chunk),
        }
        sizes.push(out.len() - start);
    }
    if opts.compression != Compression::None && sizes.len() >= 2 {
        for s in &sizes[..sizes.len() - 1] {
            // 1..=65536 stored bytes: minus one fits 16 bits.
            out.extend_from_slice(&((s - 1) as u16).to_be_bytes());
        }
    }
    Ok(out)
}

/// The bytes of the package file.
pub fn write(pkg: &Package, opts: Options) -> Result<Vec<u8>, WriteError> {
    if opts.compression != Compression::None && !(1..=9).contains(&opts.level) {
        return Err(WriteError::Invalid(format!(
            "compression level {} is not 1..=9",
            opts.level
        )));
    }
    let mut heap = Vec::new();
    let toc = encode_section(&toc_attrs(&pkg.entries, &mut heap));
    let attrs = encode_section(&pkg.info.to_attrs());
    heap.extend_from_slice(&toc.bytes);
    heap.extend_from_slice(&attrs.bytes);
    let attributes_length = u32::try_from(attrs.bytes.len())
        .map_err(|_| WriteError::Invalid("the package attributes are over 4 GiB".into()))?;
    let stored = compress_heap(&heap, opts)?;
    let total = HEADER_SIZE + stored.len();
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(&format::MAGIC);
    h.extend_from_slice(&(HEADER_SIZE as u16).to_be_bytes());
    h.extend_from_slice(&format::VERSION.to_be_bytes());
    h.extend_from_slice(&(total as u64).to_be_bytes());
    h.extend_from_slice(&format::MINOR_VERSION.to_be_bytes());
    h.extend_from_slice(&opts.compression.code().to_be_bytes());
    h.extend_from_slice(&(CHUNK_SIZE as u32).to_be_bytes());
    h.extend_from_slice(&(stored.len() as u64).to_be_bytes());
    h.extend_from_slice(&(heap.len() as u64).to_be_bytes());
    h.extend_from_slice(&attributes_length.to_be_bytes());
    h.extend_from_slice(&(attrs.strings_length as u32).to_be_bytes());
    h.extend_from_slice(&(attrs.strings_count as u32).to_be_bytes());
    h.extend_from_slice(&0u32.to_be_bytes());
    h.extend_from_slice(&(toc.bytes.len() as u64).to_be_bytes());
    h.extend_from_slice(&toc.strings_length.to_be_bytes());
    h.extend_from_slice(&toc.strings_count.to_be_bytes());
    debug_assert_eq!(h.len(), HEADER_SIZE);
    h.extend_from_slice(&stored);
    Ok(h)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, renamed into
/// place: a reader never sees half a package, and a failure leaves no file behind.
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".hpkg-writer-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    // tempfile makes the file 0600; a package is for everyone to read.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
