//! Attribute trees and their encoding, the container layer of docs/develop/packages/
//! FileFormat.rst ("The Data Container Format"), written as
//! src/kits/package/hpkg/WriterImplBase.cpp does.
//!
//! A section (the TOC or the package attributes) is a strings subsection, then a list of
//! attribute entries. The strings subsection holds each non-empty string used by at least
//! two string attributes of the section, most used first, each NUL-terminated, then a 0
//! byte (`WriteCachedStrings(cache, 2)`); a string attribute whose value is in it is written
//! as its index (unsigned LEB128), any other inline, NUL-terminated. An entry is its tag
//! (unsigned LEB128 of [`crate::format::compose_tag`]), its value, and, if it has children,
//! their list; every list ends with a 0 byte. Integers take the smallest of 1, 2, 4 or 8
//! big-endian bytes that holds them (`_ApplicableIntEncoding`; a signed value is sized by
//! twice its magnitude). Raw data is its size then either the bytes (inline) or its offset
//! in the uncompressed heap.
//!
//! Haiku sorts strings of equal use with `std::sort` over a hash table, so its order among
//! them is arbitrary; here they keep the order of their first use.

use std::collections::HashMap;

use crate::format::ty;

/// An attribute's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Uint(u64),
    String(String),
    /// Raw data written in the section itself.
    RawInline(Vec<u8>),
    /// Raw data in the heap: its size and offset in the uncompressed heap.
    RawHeap {
        size: u64,
        offset: u64,
    },
}

impl Value {
    pub fn ty(&self) -> u8 {
        match self {
            Value::Int(_) => ty::INT,
            Value::Uint(_) => ty::UINT,
            Value::String(_) => ty::STRING,
            Value::RawInline(_) | Value::RawHeap { .. } => ty::RAW,
        }
    }
}

/// An attribute with its children.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub id: u8,
    pub value: Value,
    pub children: Vec<Attr>,
}

impl Attr {
    pub fn new(id: u8, value: Value) -> Attr {
        Attr {
            id,
            value,
            children: Vec::new(),
        }
    }
    pub fn string(id: u8, s: impl Into<String>) -> Attr {
        Attr::new(id, Value::String(s.into()))
    }
    pub fn uint(id: u8, v: u64) -> Attr {
        Attr::new(id, Value::Uint(v))
    }
    pub fn with(mut self, children: Vec<Attr>) -> Attr {
        self.children = children;
        self
    }
    /// The first child with this id.
    pub fn child(&self, id: u8) -> Option<&Attr> {
        self.children.iter().find(|c| c.id == id)
    }
}

/// Appends `v` as unsigned LEB128.
pub fn write_leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn int_encoding(magnitude: u64) -> u8 {
    match magnitude {
        0..=0xff => 0,
        0x100..=0xffff => 1,
        0x1_0000..=0xffff_ffff => 2,
        _ => 3,
    }
}

/// The strings of a section in table order, and each one's index.
struct StringTable {
    index: HashMap<String, u64>,
}

impl StringTable {
    fn build(attrs: &[Attr], out: &mut Vec<u8>) -> (StringTable, u64) {
        // (use count, first use) per string, in first-use order.
        let mut uses: Vec<(String, u64)> = Vec::new();
        let mut at: HashMap<&str, usize> = HashMap::new();
        fn walk<'a>(
            attrs: &'a [Attr],
            uses: &mut Vec<(String, u64)>,
            at: &mut HashMap<&'a str, usize>,
        ) {
            for a in attrs {
                if let Value::String(s) = &a.value {
                    match at.get(s.as_str()) {
                        Some(&i) => uses[i].1 += 1,
                        None => {
                            at.insert(s, uses.len());
                            uses.push((s.clone(), 1));
                        }
                    }
                }
                walk(&a.children, uses, at);
            }
        }
        walk(attrs, &mut uses, &mut at);
        // Stable: equal counts keep their first-use order.
        uses.sort_by_key(|u| std::cmp::Reverse(u.1));
        let mut index = HashMap::new();
        let mut count = 0u64;
        for (s, n) in uses {
            if n < 2 {
                break;
            }
            // An empty string cannot be told from the table's end marker.
            if s.is_empty() {
                continue;
            }
            out.extend_from_slice(s.as_bytes());
            out.push(0);
            index.insert(s, count);
            count += 1;
        }
        out.push(0);
        (StringTable { index }, count)
    }
}

fn write_attrs(attrs: &[Attr], strings: &StringTable, out: &mut Vec<u8>) {
    for a in attrs {
        let encoding = match &a.value {
            Value::Int(v) => int_encoding(if *v >= 0 {
                (*v as u64) << 1
            } else {
                (-(*v + 1) as u64) << 1
            }),
            Value::Uint(v) => int_encoding(*v),
            Value::String(s) => u8::from(strings.index.contains_key(s)),
            Value::RawInline(_) => 0,
            Value::RawHeap { .. } => 1,
        };
        write_leb128(
            out,
            crate::format::compose_tag(a.id, a.value.ty(), encoding, !a.children.is_empty()),
        );
        match &a.value {
            Value::Int(v) => write_int(out, *v as u64, encoding),
            Value::Uint(v) => write_int(out, *v, encoding),
            Value::String(s) => match strings.index.get(s) {
                Some(&i) => write_leb128(out, i),
                None => {
                    out.extend_from_slice(s.as_bytes());
                    out.push(0);
                }
            },
            Value::RawInline(d) => {
                write_leb128(out, d.len() as u64);
                out.extend_from_slice(d);
            }
            Value::RawHeap { size, offset } => {
                write_leb128(out, *size);
                write_leb128(out, *offset);
            }
        }
        if !a.children.is_empty() {
            write_attrs(&a.children, strings, out);
        }
    }
    out.push(0);
}

fn write_int(out: &mut Vec<u8>, v: u64, encoding: u8) {
    match encoding {
        0 => out.push(v as u8),
        1 => out.extend_from_slice(&(v as u16).to_be_bytes()),
        2 => out.extend_from_slice(&(v as u32).to_be_bytes()),
        _ => out.extend_from_slice(&v.to_be_bytes()),
    }
}

/// A section's bytes and what the header says of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub bytes: Vec<u8>,
    pub strings_length: u64,
    pub strings_count: u64,
}

/// Encodes a section: the strings subsection, then `attrs`, then the list's 0.
pub fn encode_section(attrs: &[Attr]) -> Section {
    let mut bytes = Vec::new();
    let (strings, strings_count) = StringTable::build(attrs, &mut bytes);
    let strings_length = bytes.len() as u64;
    write_attrs(attrs, &strings, &mut bytes);
    Section {
        bytes,
        strings_length,
        strings_count,
    }
}
