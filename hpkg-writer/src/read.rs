//! A reader that checks everything: the header's sizes against the file, the heap's chunks
//! and size table, each section's strings and attribute lists, every reference into the
//! heap. Anything wrong is one [`ReadError`] saying where (file offset, or section and heap
//! offset) and what; nothing in a file makes it panic or allocate without bound (the
//! uncompressed heap is capped at [`MAX_HEAP`]).
//!
//! What it checks follows Haiku's own reader: `PackageReaderImpl::Init` and
//! `ReaderImplBase` (src/kits/package/hpkg/), `PackageFileHeapReader::Init` (a chunk
//! size of 64 KiB, a size table that adds up, no chunk stored larger than its data).

use crate::attr::{Attr, Value};
use crate::format::{self, compression, ty, CHUNK_SIZE, HEADER_SIZE};
use crate::info::PackageInfo;
use crate::tree::{entries_from, Entry};
use crate::write::{Compression, Package};

/// The largest uncompressed heap this reader accepts: 1 GiB.
pub const MAX_HEAP: u64 = 1 << 30;
/// The deepest attribute nesting it follows (directories included).
pub const MAX_DEPTH: usize = 256;

/// What is wrong with a package file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadError {}

fn err<T>(m: impl Into<String>) -> Result<T, ReadError> {
    Err(ReadError(m.into()))
}

/// The header, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub header_size: u16,
    pub version: u16,
    pub total_size: u64,
    pub minor_version: u16,
    pub heap_compression: u16,
    pub heap_chunk_size: u32,
    pub heap_size_compressed: u64,
    pub heap_size_uncompressed: u64,
    pub attributes_length: u32,
    pub attributes_strings_length: u32,
    pub attributes_strings_count: u32,
    pub reserved1: u32,
    pub toc_length: u64,
    pub toc_strings_length: u64,
    pub toc_strings_count: u64,
}

/// A package file taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw {
    pub header: Header,
    pub compression: Compression,
    /// The uncompressed heap.
    pub heap: Vec<u8>,
    /// Each chunk's stored size, in order.
    pub chunk_sizes: Vec<usize>,
    pub toc: Vec<Attr>,
    pub attributes: Vec<Attr>,
    /// The strings subsections, in order.
    pub toc_strings: Vec<String>,
    pub attribute_strings: Vec<String>,
}

impl Raw {
    /// Where the TOC starts in the uncompressed heap (the file data end there).
    pub fn toc_offset(&self) -> usize {
        self.heap.len() - self.header.attributes_length as usize - self.header.toc_length as usize
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

fn parse_header(file: &[u8]) -> Result<Header, ReadError> {
    if file.len() < HEADER_SIZE {
        return err(format!(
            "truncated: {} bytes, less than the {HEADER_SIZE}-byte header",
            file.len()
        ));
    }
    if file[..4] != format::MAGIC {
        return err(format!(
            "not a Haiku package: its magic is {:02x?}, not \"hpkg\"",
            &file[..4]
        ));
    }
    let h = Header {
        header_size: be16(file, 4),
        version: be16(file, 6),
        total_size: be64(file, 8),
        minor_version: be16(file, 16),
        heap_compression: be16(file, 18),
        heap_chunk_size: be32(file, 20),
        heap_size_compressed: be64(file, 24),
        heap_size_uncompressed: be64(file, 32),
        attributes_length: be32(file, 40),
        attributes_strings_length: be32(file, 44),
        attributes_strings_count: be32(file, 48),
        reserved1: be32(file, 52),
        toc_length: be64(file, 56),
        toc_strings_length: be64(file, 64),
        toc_strings_count: be64(file, 72),
    };
    if h.version != format::VERSION {
        return err(format!(
            "header: format version {} (this reader knows 2)",
            h.version
        ));
    }
    if usize::from(h.header_size) < HEADER_SIZE {
        return err(format!(
            "header: header_size {} is less than {HEADER_SIZE}",
            h.header_size
        ));
    }
    if h.total_size != file.len() as u64 {
        let what = if h.total_size > file.len() as u64 {
            "truncated"
        } else {
            "trailing data"
        };
        return err(format!(
            "{what}: the header says {} bytes, the file has {}",
            h.total_size,
            file.len()
        ));
    }
    if u64::from(h.header_size).checked_add(h.heap_size_compressed) != Some(h.total_size) {
        return err(format!(
            "header: header_size {} + heap_size_compressed {} is not the file size {}",
            h.header_size, h.heap_size_compressed, h.total_size
        ));
    }
    if h.heap_chunk_size as usize != CHUNK_SIZE {
        return err(format!(
            "header: heap_chunk_size {} (Haiku's is {CHUNK_SIZE})",
            h.heap_chunk_size
        ));
    }
    if h.heap_size_uncompressed > MAX_HEAP {
        return err(format!(
            "header: an uncompressed heap of {} bytes is more than this reader's {MAX_HEAP}",
            h.heap_size_uncompressed
        ));
    }
    let sections = u64::from(h.attributes_length).checked_add(h.toc_length);
    if sections.is_none_or(|s| s > h.heap_size_uncompressed) {
        return err(format!(
            "header: attributes_length {} + toc_length {} exceed the heap's {} bytes",
            h.attributes_length, h.toc_length, h.heap_size_uncompressed
        ));
    }
    Ok(h)
}

fn inflate(c: Compression, packed: &[u8], want: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::with_capacity(want);
    let r: Result<usize, std::io::Error> = match c {
        Compression::None => return Err("stored compressed in an uncompressed heap".into()),
        Compression::Zlib => flate2::read::ZlibDecoder::new(packed)
            .take(want as u64 + 1)
            .read_to_end(&mut out),
        Compression::Zstd => match zstd::stream::read::Decoder::new(packed) {
            Ok(d) => d.take(want as u64 + 1).read_to_end(&mut out),
            Err(e) => Err(e),
        },
    };
    r.map_err(|e| format!("does not decompress: {e}"))?;
    if out.len() != want {
        return Err(format!(
            "decompresses to {}{} bytes, not {want}",
            out.len().min(want),
            if out.len() > want { "+" } else { "" }
        ));
    }
    Ok(out)
}

fn read_heap(file: &[u8], h: &Header) -> Result<(Compression, Vec<u8>, Vec<usize>), ReadError> {
    let c = match h.heap_compression {
        compression::NONE => Compression::None,
        compression::ZLIB => Compression::Zlib,
        compression::ZSTD => Compression::Zstd,
        other => return err(format!("header: unknown heap compression {other}")),
    };
    let base = usize::from(h.header_size);
    let stored = &file[base..];
    let size = h.heap_size_uncompressed as usize;
    let chunks = size.div_ceil(CHUNK_SIZE);
    let table_len = if c != Compression::None && chunks >= 2 {
        (chunks - 1) * 2
    } else {
        0
    };
    if stored.len() < table_len {
        return err(format!(
            "heap: {} stored bytes cannot hold the {table_len}-byte chunk size table",
            stored.len()
        ));
    }
    let data_len = stored.len() - table_len;
    let mut sizes = Vec::with_capacity(chunks);
    if c == Compression::None {
        if data_len != size {
            return err(format!(
                "heap: uncompressed, yet {data_len} bytes stored for {size}"
            ));
        }
        sizes.extend((0..chunks).map(|i| (size - i * CHUNK_SIZE).min(CHUNK_SIZE)));
    } else {
        let mut sum = 0usize;
        for i in 0..chunks.saturating_sub(1) {
            let s = usize::from(be16(stored, data_len + 2 * i)) + 1;
            sum += s;
            sizes.push(s);
        }
        if chunks > 0 {
            if sum > data_len {
                return err(format!(
                    "heap: the chunk size table adds up to {sum} bytes, more than the {data_len} stored (file offset {})",
                    base + data_len
                ));
            }
            sizes.push(data_len - sum);
        } else if data_len != 0 {
            return err(format!("heap: empty, yet {data_len} bytes stored"));
        }
    }
    let mut heap = Vec::with_capacity(size);
    let mut at = 0usize;
    for (i, s) in sizes.iter().enumerate() {
        let want = (size - i * CHUNK_SIZE).min(CHUNK_SIZE);
        let chunk = &stored[at..at + s];
        let where_ = format!(
            "heap chunk {i} (file offset {}, {s} bytes stored for {want})",
            base + at
        );
        if *s > want {
            return err(format!("{where_}: stored larger than its data"));
        } else if *s == want {
            heap.extend_from_slice(chunk);
        } else {
            heap.extend(inflate(c, chunk, want).map_err(|m| ReadError(format!("{where_}: {m}")))?);
        }
        at += s;
    }
    Ok((c, heap, sizes))
}

/// Reads attributes of one section.
struct SectionReader<'a> {
    name: &'static str,
    /// The whole uncompressed heap (raw heap references are checked against it).
    heap: &'a [u8],
    /// Where the section starts and ends in the heap.
    start: usize,
    end: usize,
    pos: usize,
    strings: Vec<String>,
    /// A file of a newer minor version: unknown ids are kept, not refused.
    lenient: bool,
}

impl SectionReader<'_> {
    fn fail<T>(&self, at: usize, m: impl std::fmt::Display) -> Result<T, ReadError> {
        err(format!(
            "{} section, heap offset {at} (section offset {}): {m}",
            self.name,
            at - self.start
        ))
    }

    fn byte(&mut self) -> Result<u8, ReadError> {
        if self.pos >= self.end {
            return self.fail(self.pos, "runs past the end of the section");
        }
        self.pos += 1;
        Ok(self.heap[self.pos - 1])
    }

    fn leb128(&mut self) -> Result<u64, ReadError> {
        let at = self.pos;
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return self.fail(at, "LEB128 number over 64 bits");
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.fail(at, "LEB128 number over 64 bits")
    }

    fn cstring(&mut self) -> Result<String, ReadError> {
        let at = self.pos;
        let rest = &self.heap[self.pos..self.end];
        let Some(n) = rest.iter().position(|&b| b == 0) else {
            return self.fail(at, "a string without its terminating 0 byte");
        };
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|e| {
                ReadError(format!(
                    "{} section, heap offset {at}: a string that is not UTF-8: {e}",
                    self.name
                ))
            })?
            .to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn strings(&mut self, length: u64, count: u64) -> Result<(), ReadError> {
        if length > (self.end - self.start) as u64 {
            return self.fail(
                self.start,
                format!("strings_length {length} exceeds the section"),
            );
        }
        let table_end = self.start + length as usize;
        let outer_end = self.end;
        self.end = table_end;
        loop {
            let at = self.pos;
            let s = self.cstring()?;
            if s.is_empty() {
                break;
            }
            if self.strings.len() as u64 == count {
                return self.fail(at, format!("more strings than the header's {count}"));
            }
            self.strings.push(s);
        }
        if self.strings.len() as u64 != count {
            return self.fail(
                self.pos,
                format!("{} strings, the header says {count}", self.strings.len()),
            );
        }
        if self.pos != table_end {
            return self.fail(
                self.pos,
                format!("the strings end before strings_length {length}"),
            );
        }
        self.end = outer_end;
        Ok(())
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Attr>, ReadError> {
        if depth > MAX_DEPTH {
            return self.fail(
                self.pos,
                format!("attributes nested deeper than {MAX_DEPTH}"),
            );
        }
        let mut out = Vec::new();
        loop {
            let at = self.pos;
            let tag = self.leb128()?;
            if tag == 0 {
                return Ok(out);
            }
            let t = tag - 1;
            if t >> 13 != 0 {
                return self.fail(
                    at,
                    format!("attribute tag {tag:#x} has bits beyond the 13 defined"),
                );
            }
            let encoding = ((t >> 11) & 3) as u8;
            let has_children = (t >> 10) & 1 != 0;
            let vt = ((t >> 7) & 7) as u8;
            let id = (t & 0x7f) as u8;
            if let Some(&expected) = format::ID_TYPES.get(usize::from(id)) {
                if expected != vt {
                    return self.fail(
                        at,
                        format!(
                            "{} with value type {vt}, not {expected}",
                            crate::info::name_of(id)
                        ),
                    );
                }
            } else if !self.lenient {
                return self.fail(at, format!("unknown attribute id {id}"));
            }
            let value = match vt {
                ty::INT | ty::UINT => {
                    let n = 1usize << encoding;
                    let mut v = 0u64;
                    for _ in 0..n {
                        v = (v << 8) | u64::from(self.byte()?);
                    }
                    if vt == ty::INT {
                        let shift = 64 - 8 * n as u32;
                        Value::Int(((v << shift) as i64) >> shift)
                    } else {
                        Value::Uint(v)
                    }
                }
                ty::STRING => match encoding {
                    0 => Value::String(self.cstring()?),
                    1 => {
                        let i = self.leb128()?;
                        match self.strings.get(i as usize) {
                            Some(s) if i < self.strings.len() as u64 => Value::String(s.clone()),
                            _ => {
                                return self.fail(
                                    at,
                                    format!(
                                        "string index {i}, the table has {}",
                                        self.strings.len()
                                    ),
                                )
                            }
                        }
                    }
                    e => return self.fail(at, format!("string encoding {e} is not 0 or 1")),
                },
                ty::RAW => {
                    let size = self.leb128()?;
                    match encoding {
                        0 => {
                            if size > (self.end - self.pos) as u64 {
                                return self.fail(
                                    at,
                                    format!("{size} bytes of inline data run past the section"),
                                );
                            }
                            let d = self.heap[self.pos..self.pos + size as usize].to_vec();
                            self.pos += size as usize;
                            Value::RawInline(d)
                        }
                        1 => {
                            let offset = self.leb128()?;
                            if offset
                                .checked_add(size)
                                .is_none_or(|e| e > self.heap.len() as u64)
                            {
                                return self.fail(at, format!("data at heap offset {offset}, {size} bytes, lies outside the {}-byte heap", self.heap.len()));
                            }
                            Value::RawHeap { size, offset }
                        }
                        e => return self.fail(at, format!("raw encoding {e} is not 0 or 1")),
                    }
                }
                other => {
                    return self.fail(
                        at,
                        format!("attribute value type {other} is not one of 1..=4"),
                    )
                }
            };
            let children = if has_children {
                self.list(depth + 1)?
            } else {
                Vec::new()
            };
            out.push(Attr {
                id,
                value,
                children,
            });
        }
    }
}

fn section(
    name: &'static str,
    heap: &[u8],
    start: usize,
    length: usize,
    strings_length: u64,
    strings_count: u64,
    lenient: bool,
) -> Result<(Vec<Attr>, Vec<String>), ReadError> {
    let mut r = SectionReader {
        name,
        heap,
        start,
        end: start + length,
        pos: start,
        strings: Vec::new(),
        lenient,
    };
    r.strings(strings_length, strings_count)?;
    let attrs = r.list(0)?;
    if r.pos != r.end {
        return r.fail(
            r.pos,
            format!("{} bytes after the attribute list's end", r.end - r.pos),
        );
    }
    Ok((attrs, r.strings))
}

/// Takes a package file apart, checking every size and reference.
pub fn read_raw(file: &[u8]) -> Result<Raw, ReadError> {
    let header = parse_header(file)?;
    let (compression, heap, chunk_sizes) = read_heap(file, &header)?;
    let lenient = header.minor_version > format::MINOR_VERSION;
    let attr_len = header.attributes_length as usize;
    let toc_len = header.toc_length as usize;
    let attr_start = heap.len() - attr_len;
    let toc_start = attr_start - toc_len;
    let (toc, toc_strings) = section(
        "TOC",
        &heap,
        toc_start,
        toc_len,
        header.toc_strings_length,
        header.toc_strings_count,
        lenient,
    )?;
    let (attributes, attribute_strings) = section(
        "package attributes",
        &heap,
        attr_start,
        attr_len,
        u64::from(header.attributes_strings_length),
        u64::from(header.attributes_strings_count),
        lenient,
    )?;
    Ok(Raw {
        header,
        compression,
        heap,
        chunk_sizes,
        toc,
        attributes,
        toc_strings,
        attribute_strings,
    })
}

/// Reads a package file into its model.
pub fn read(file: &[u8]) -> Result<Package, ReadError> {
    let raw = read_raw(file)?;
    package_of(&raw)
}

/// The model of a taken-apart package.
pub fn package_of(raw: &Raw) -> Result<Package, ReadError> {
    let strict = raw.header.minor_version <= format::MINOR_VERSION;
    let info = PackageInfo::from_attrs(&raw.attributes, strict)
        .map_err(|m| ReadError(format!("package attributes: {m}")))?;
    let entries: Vec<Entry> =
        entries_from(&raw.toc, &raw.heap, "").map_err(|m| ReadError(format!("TOC: {m}")))?;
    Ok(Package { info, entries })
}
