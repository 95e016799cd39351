//! Haiku packages (`.hpkg`, HPKG format version 2) written as Haiku's own `package create`
//! writes them, and read back with every check.
//!
//! The format, in this crate's words, with where each fact comes from in Haiku's sources
//! (haiku/haiku):
//!
//! - **File** (docs/develop/packages/FileFormat.rst; headers/private/package/hpkg/
//!   HPKGDefsPrivate.h `hpkg_header`): an 80-byte big-endian header, then the heap. The
//!   header holds the magic `hpkg`, its own size (the heap's offset), format version 2, the
//!   file's total size, minor version 1, the heap's compression, chunk size and its stored
//!   and uncompressed sizes, and the length, strings length and strings count of the two
//!   sections. [`format`] has every number.
//! - **Heap** ([`write`]): file data, then the TOC, then the package attributes, cut into
//!   64 KiB chunks compressed one by one, with a table of stored chunk sizes at the end.
//!   `package create` compresses with zstd at its best level by default
//!   ([`write::Options`]); zlib and none are there too.
//! - **Sections** ([`attr`]): a table of the strings used twice or more, then trees of
//!   attributes, each a LEB128 tag (id, value type, encoding, has-children), a value, and
//!   its children; lists end with a 0 byte.
//! - **TOC** ([`tree`]): `dir:entry` trees of files, directories and symlinks with their
//!   type, permissions, times, data, link targets and extended attributes.
//! - **Package attributes** ([`info`]): name, version, architecture, summary,
//!   description, vendor, packager, copyrights, licenses, URLs, provides, requires and the
//!   rest of a `.PackageInfo` (docs/develop/packages/BuildingPackages.rst), in the order
//!   `WriterImplBase::RegisterPackageInfo` (src/kits/package/hpkg/WriterImplBase.cpp)
//!   writes them; versions follow Haiku's grammar ([`version`]).
//!
//! [`read`] takes any package apart with every size and reference checked (a truncated or
//! corrupt file is one error naming where, never a panic); [`list`] prints one the way
//! `package list` does. `docs/hpkg.md` in the repository says where this writer departs from
//! Haiku's.
#![forbid(unsafe_code)]

pub mod attr;
pub mod format;
pub mod info;
pub mod list;
pub mod read;
pub mod tree;
pub mod version;
pub mod write;

pub use info::{Expression, PackageInfo, Provides, UserSettingsFile};
pub use read::{read, read_raw, ReadError};
pub use tree::{add_path, Entry, Kind, Times};
pub use version::{Version, VersionError};
pub use write::{write, write_file, Compression, Options, Package, WriteError};
