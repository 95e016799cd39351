//! The numbers of the HPKG v2 format, each with the Haiku file it comes from.

/// `B_HPKG_MAGIC`, the first four bytes: "hpkg" (headers/os/package/hpkg/HPKGDefs.h).
pub const MAGIC: [u8; 4] = *b"hpkg";
/// `B_HPKG_VERSION` (HPKGDefs.h).
pub const VERSION: u16 = 2;
/// `B_HPKG_MINOR_VERSION` (HPKGDefs.h): a reader ignores unknown attributes only in a file
/// of a greater minor version.
pub const MINOR_VERSION: u16 = 1;
/// `sizeof(hpkg_header)` (headers/private/package/hpkg/HPKGDefsPrivate.h): 80 bytes, big
/// endian; also where the heap starts.
pub const HEADER_SIZE: usize = 80;
/// `kChunkSize` (headers/private/package/hpkg/PackageFileHeapAccessorBase.h): the heap is
/// cut into chunks of 64 KiB of uncompressed data, each compressed on its own.
pub const CHUNK_SIZE: usize = 64 * 1024;
/// `kCompressionSizeThreshold` (src/kits/package/hpkg/PackageFileHeapWriter.cpp): a chunk
/// shorter than this is stored as it is.
pub const COMPRESSION_THRESHOLD: usize = 64;
/// `B_HPKG_MAX_INLINE_DATA_SIZE` (HPKGDefs.h): file data of at most 8 bytes is written in
/// the TOC itself, longer data goes to the heap.
pub const MAX_INLINE_DATA: usize = 8;

/// Attribute value types, `B_HPKG_ATTRIBUTE_TYPE_*` (HPKGDefs.h).
pub mod ty {
    pub const INVALID: u8 = 0;
    pub const INT: u8 = 1;
    pub const UINT: u8 = 2;
    pub const STRING: u8 = 3;
    pub const RAW: u8 = 4;
}

/// `B_HPKG_COMPRESSION_*` (HPKGDefs.h).
pub mod compression {
    pub const NONE: u16 = 0;
    pub const ZLIB: u16 = 1;
    pub const ZSTD: u16 = 2;
}

/// `B_HPKG_FILE_TYPE_*` (HPKGDefs.h).
pub mod file_type {
    pub const FILE: u64 = 0;
    pub const DIRECTORY: u64 = 1;
    pub const SYMLINK: u64 = 2;
}

/// Default permissions, written only when an entry differs (`B_HPKG_DEFAULT_*` in
/// HPKGDefs.h; PackageWriterImpl.cpp `_AddEntry`).
pub const DEFAULT_FILE_PERMISSIONS: u32 = 0o644;
pub const DEFAULT_DIRECTORY_PERMISSIONS: u32 = 0o755;
pub const DEFAULT_SYMLINK_PERMISSIONS: u32 = 0o777;

/// Attribute IDs, `B_HPKG_ATTRIBUTE_ID_*` (headers/os/package/hpkg/PackageAttributes.h:
/// id, type and name of each). Only these 56 exist; an id is 7 bits in the tag.
pub mod id {
    pub const DIRECTORY_ENTRY: u8 = 0;
    pub const FILE_TYPE: u8 = 1;
    pub const FILE_PERMISSIONS: u8 = 2;
    pub const FILE_USER: u8 = 3;
    pub const FILE_GROUP: u8 = 4;
    pub const FILE_ATIME: u8 = 5;
    pub const FILE_MTIME: u8 = 6;
    pub const FILE_CRTIME: u8 = 7;
    pub const FILE_ATIME_NANOS: u8 = 8;
    pub const FILE_MTIME_NANOS: u8 = 9;
    pub const FILE_CRTIME_NANOS: u8 = 10;
    pub const FILE_ATTRIBUTE: u8 = 11;
    pub const FILE_ATTRIBUTE_TYPE: u8 = 12;
    pub const DATA: u8 = 13;
    pub const SYMLINK_PATH: u8 = 14;
    pub const PACKAGE_NAME: u8 = 15;
    pub const PACKAGE_SUMMARY: u8 = 16;
    pub const PACKAGE_DESCRIPTION: u8 = 17;
    pub const PACKAGE_VENDOR: u8 = 18;
    pub const PACKAGE_PACKAGER: u8 = 19;
    pub const PACKAGE_FLAGS: u8 = 20;
    pub const PACKAGE_ARCHITECTURE: u8 = 21;
    pub const PACKAGE_VERSION_MAJOR: u8 = 22;
    pub const PACKAGE_VERSION_MINOR: u8 = 23;
    pub const PACKAGE_VERSION_MICRO: u8 = 24;
    pub const PACKAGE_VERSION_REVISION: u8 = 25;
    pub const PACKAGE_COPYRIGHT: u8 = 26;
    pub const PACKAGE_LICENSE: u8 = 27;
    pub const PACKAGE_PROVIDES: u8 = 28;
    pub const PACKAGE_REQUIRES: u8 = 29;
    pub const PACKAGE_SUPPLEMENTS: u8 = 30;
    pub const PACKAGE_CONFLICTS: u8 = 31;
    pub const PACKAGE_FRESHENS: u8 = 32;
    pub const PACKAGE_REPLACES: u8 = 33;
    pub const PACKAGE_RESOLVABLE_OPERATOR: u8 = 34;
    pub const PACKAGE_CHECKSUM: u8 = 35;
    pub const PACKAGE_VERSION_PRE_RELEASE: u8 = 36;
    pub const PACKAGE_PROVIDES_COMPATIBLE: u8 = 37;
    pub const PACKAGE_URL: u8 = 38;
    pub const PACKAGE_SOURCE_URL: u8 = 39;
    pub const PACKAGE_INSTALL_PATH: u8 = 40;
    pub const PACKAGE_BASE_PACKAGE: u8 = 41;
    pub const PACKAGE_GLOBAL_WRITABLE_FILE: u8 = 42;
    pub const PACKAGE_USER_SETTINGS_FILE: u8 = 43;
    pub const PACKAGE_WRITABLE_FILE_UPDATE_TYPE: u8 = 44;
    pub const PACKAGE_SETTINGS_FILE_TEMPLATE: u8 = 45;
    pub const PACKAGE_USER: u8 = 46;
    pub const PACKAGE_USER_REAL_NAME: u8 = 47;
    pub const PACKAGE_USER_HOME: u8 = 48;
    pub const PACKAGE_USER_SHELL: u8 = 49;
    pub const PACKAGE_USER_GROUP: u8 = 50;
    pub const PACKAGE_GROUP: u8 = 51;
    pub const PACKAGE_POST_INSTALL_SCRIPT: u8 = 52;
    pub const PACKAGE_IS_WRITABLE_DIRECTORY: u8 = 53;
    pub const PACKAGE: u8 = 54;
    pub const PACKAGE_PRE_UNINSTALL_SCRIPT: u8 = 55;
    /// One past the last id this format version defines.
    pub const COUNT: u8 = 56;
}

/// Each attribute id's value type, from PackageAttributes.h (index = id).
pub const ID_TYPES: [u8; id::COUNT as usize] = {
    use ty::{RAW, STRING as S, UINT as U};
    [
        S, U, U, S, S, U, U, U, U, U, U, S, U, RAW, S, // 0..=14: the archive
        S, S, S, S, S, U, U, S, S, S, U, S, S, S, S, // 15..=29
        S, S, S, S, U, S, S, S, S, S, S, S, S, S, U, // 30..=44
        S, S, S, S, S, S, S, S, U, S, S, // 45..=55
    ]
};

/// Each attribute id's name, from PackageAttributes.h (index = id).
pub const ID_NAMES: [&str; id::COUNT as usize] = [
    "dir:entry",
    "file:type",
    "file:permissions",
    "file:user",
    "file:group",
    "file:atime",
    "file:mtime",
    "file:crtime",
    "file:atime:nanos",
    "file:mtime:nanos",
    "file:crtime:nanos",
    "file:attribute",
    "file:attribute:type",
    "data",
    "symlink:path",
    "package:name",
    "package:summary",
    "package:description",
    "package:vendor",
    "package:packager",
    "package:flags",
    "package:architecture",
    "package:version.major",
    "package:version.minor",
    "package:version.micro",
    "package:version.revision",
    "package:copyright",
    "package:license",
    "package:provides",
    "package:requires",
    "package:supplements",
    "package:conflicts",
    "package:freshens",
    "package:replaces",
    "package:resolvable.operator",
    "package:checksum",
    "package:version.prerelease",
    "package:provides.compatible",
    "package:url",
    "package:source-url",
    "package:install-path",
    "package:base-package",
    "package:global-writable-file",
    "package:user-settings-file",
    "package:writable-file-update-type",
    "package:settings-file-template",
    "package:user",
    "package:user.real-name",
    "package:user.home",
    "package:user.shell",
    "package:user.group",
    "package:group",
    "package:post-install-script",
    "package:is-writable-directory",
    "package",
    "package:pre-uninstall-script",
];

/// `BPackageInfo::kArchitectureNames` (src/kits/package/PackageInfo.cpp), by
/// `B_PACKAGE_ARCHITECTURE_*` value.
pub const ARCHITECTURES: [&str; 11] = [
    "any", "x86", "x86_gcc2", "source", "x86_64", "ppc", "arm", "m68k", "sparc", "arm64", "riscv64",
];

/// `BPackageResolvableExpression::kOperatorNames`
/// (src/kits/package/PackageResolvableExpression.cpp), by `B_PACKAGE_RESOLVABLE_OP_*`.
pub const OPERATORS: [&str; 6] = ["<", "<=", "==", "!=", ">=", ">"];

/// `BPackageInfo::kWritableFileUpdateTypes` (PackageInfo.cpp), by
/// `B_WRITABLE_FILE_UPDATE_TYPE_*`.
pub const UPDATE_TYPES: [&str; 3] = ["keep-old", "manual", "auto-merge"];

/// `B_PACKAGE_FLAG_*` (headers/os/package/PackageFlags.h).
pub const FLAG_APPROVE_LICENSE: u32 = 1;
pub const FLAG_SYSTEM_PACKAGE: u32 = 2;

/// The tag of an attribute (HPKGDefsPrivate.h `compose_attribute_tag`): encoding in bits
/// 11-12, has-children in bit 10, type in bits 7-9, id in bits 0-6, plus one so that no
/// tag is 0 (0 ends a list).
pub fn compose_tag(id: u8, ty: u8, encoding: u8, has_children: bool) -> u64 {
    ((u64::from(encoding) << 11)
        | (u64::from(has_children) << 10)
        | (u64::from(ty) << 7)
        | u64::from(id))
        + 1
}
