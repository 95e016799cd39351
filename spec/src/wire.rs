//! Errors of the generated encoders and decoders. Every malformed input is one of these values:
//! the decoders never panic and never read past the bytes they were given.

use core::fmt;

/// Encoding into a caller's buffer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer holds `got` bytes; the message needs `needed`.
    BufferTooSmall { needed: usize, got: usize },
    /// A TLV blob is not a header followed by exactly `length` value bytes within the limit.
    BadTlv,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed, got } => {
                write!(f, "buffer of {got} bytes is too small, {needed} needed")
            }
            EncodeError::BadTlv => {
                f.write_str("TLV blob length does not match its header or exceeds the limit")
            }
        }
    }
}

/// Decoding bytes from the device (or, in a device model, from the driver) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the message needs.
    Short { needed: usize, got: usize },
    /// More bytes than the message can have.
    Oversized { max: usize, got: usize },
    /// The device answered with a status other than OK (the raw status code).
    Status(u32),
    /// A request or event code this spec does not know.
    UnknownCode(u32),
    /// The length is within bounds but not one the message can have (e.g. not a whole
    /// number of items, or a TLV whose header disagrees with its size).
    BadLength { got: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short { needed, got } => {
                write!(f, "short message: {got} bytes, {needed} needed")
            }
            DecodeError::Oversized { max, got } => {
                write!(f, "oversized message: {got} bytes, at most {max}")
            }
            DecodeError::Status(s) => write!(f, "device status {s:#x}"),
            DecodeError::UnknownCode(c) => write!(f, "unknown code {c:#x}"),
            DecodeError::BadLength { got } => write!(f, "message length {got} is inconsistent"),
        }
    }
}

/// Why an ioctl's (opcode, pointer, length) was refused before any user memory was touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoctlError {
    UnknownOpcode(u32),
    NullPointer,
    /// The argument does not lie in user address space.
    NotUserAddress(u64),
    /// The caller said its argument is `got` bytes; the opcode's structure is `needed`.
    TooShort {
        needed: usize,
        got: usize,
    },
}

impl fmt::Display for IoctlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoctlError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            IoctlError::NullPointer => f.write_str("null argument"),
            IoctlError::NotUserAddress(a) => write!(f, "argument {a:#x} is not in user memory"),
            IoctlError::TooShort { needed, got } => {
                write!(f, "argument length {got}, {needed} needed")
            }
        }
    }
}

/// Copies `bytes` to `out[*pos..]` and advances `pos`.
pub(crate) fn put(out: &mut [u8], pos: &mut usize, bytes: &[u8]) -> Result<(), EncodeError> {
    let end = *pos + bytes.len();
    match out.get_mut(*pos..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            *pos = end;
            Ok(())
        }
        None => Err(EncodeError::BufferTooSmall {
            needed: end,
            got: out.len(),
        }),
    }
}

/// Reads a `T` from the front of `bytes`.
pub(crate) fn take<T: zerocopy::FromBytes>(bytes: &[u8]) -> Result<T, DecodeError> {
    T::read_from_prefix(bytes)
        .map(|(v, _)| v)
        .map_err(|_| DecodeError::Short {
            needed: core::mem::size_of::<T>(),
            got: bytes.len(),
        })
}

/// Reads the little-endian u32 at the front of `bytes`.
pub(crate) fn code_of(bytes: &[u8]) -> Result<u32, DecodeError> {
    take::<[u8; 4]>(bytes).map(u32::from_le_bytes)
}

/// A union member read from the front of the union's bytes (the generated layout asserts
/// guarantee every member fits).
pub(crate) fn read_member<T: zerocopy::FromBytes>(raw: &[u8]) -> T {
    T::read_from_prefix(raw)
        .map(|(v, _)| v)
        .unwrap_or_else(|_| T::new_zeroed())
}

/// Writes a union member over the front of the union's bytes.
pub(crate) fn write_member<T: zerocopy::IntoBytes + zerocopy::Immutable>(raw: &mut [u8], v: &T) {
    let b = v.as_bytes();
    if let Some(dst) = raw.get_mut(..b.len()) {
        dst.copy_from_slice(b);
    }
}
