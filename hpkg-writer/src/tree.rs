//! The archive layer (docs/develop/packages/FileFormat.rst, "The Archive Format"): files,
//! directories and symlinks, and their TOC attributes in the order
//! `PackageWriterImpl::_AddEntry` (src/kits/package/hpkg/PackageWriterImpl.cpp) writes
//! them: `dir:entry` (the name) with children `file:type` (unless a file),
//! `file:permissions` (unless the type's default), `file:atime`, `file:mtime`,
//! `file:crtime`, then `data` (a non-empty file: inline when at most 8 bytes, else in the
//! heap) or `symlink:path`, then each extended attribute (`file:attribute` with its
//! `file:attribute:type` and `data`), then a directory's entries. File data go to the heap
//! in that same walk, so the heap holds them in TOC order.

use crate::attr::{Attr, Value};
use crate::format::{self, file_type, id};

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File(Vec<u8>),
    Directory(Vec<Entry>),
    Symlink(String),
}

/// A BFS extended attribute of an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileAttribute {
    pub name: String,
    /// The attribute's type code (e.g. 'MIMS').
    pub type_code: u32,
    pub data: Vec<u8>,
}

/// Seconds since the epoch. Haiku's writer stores each as 32 bits (`uint32(st.st_mtime)`);
/// a reader takes any width.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    pub atime: Option<u64>,
    pub mtime: Option<u64>,
    pub crtime: Option<u64>,
}

impl Times {
    /// Every time the same, as `package create` does off Haiku (crtime = mtime there).
    pub fn all(t: u64) -> Times {
        Times {
            atime: Some(t),
            mtime: Some(t),
            crtime: Some(t),
        }
    }
}

/// A file, directory or symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    /// Permission bits (07777).
    pub permissions: u32,
    pub times: Times,
    pub attributes: Vec<FileAttribute>,
}

impl Entry {
    pub fn file(name: &str, data: Vec<u8>, permissions: u32, times: Times) -> Entry {
        Entry {
            name: name.into(),
            kind: Kind::File(data),
            permissions,
            times,
            attributes: Vec::new(),
        }
    }
    pub fn directory(name: &str, children: Vec<Entry>, times: Times) -> Entry {
        Entry {
            name: name.into(),
            kind: Kind::Directory(children),
            permissions: format::DEFAULT_DIRECTORY_PERMISSIONS,
            times,
            attributes: Vec::new(),
        }
    }
    pub fn symlink(name: &str, target: &str, times: Times) -> Entry {
        Entry {
            name: name.into(),
            kind: Kind::Symlink(target.into()),
            permissions: format::DEFAULT_SYMLINK_PERMISSIONS,
            times,
            attributes: Vec::new(),
        }
    }
    /// The type's `B_HPKG_FILE_TYPE_*` and default permissions.
    pub fn type_and_default(&self) -> (u64, u32) {
        match self.kind {
            Kind::File(_) => (file_type::FILE, format::DEFAULT_FILE_PERMISSIONS),
            Kind::Directory(_) => (file_type::DIRECTORY, format::DEFAULT_DIRECTORY_PERMISSIONS),
            Kind::Symlink(_) => (file_type::SYMLINK, format::DEFAULT_SYMLINK_PERMISSIONS),
        }
    }
}

/// Adds a file at a `/`-separated path under `root`, making the directories on the way
/// (with `dir_times`). Errors name the path: an empty, `.` or `..` component (refused by
/// `_RegisterEntry`), or a path through or onto an existing non-directory.
pub fn add_path(
    root: &mut Vec<Entry>,
    path: &str,
    entry: Entry,
    dir_times: Times,
) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    if let Some(bad) = parts
        .iter()
        .find(|p| p.is_empty() || **p == "." || **p == "..")
    {
        return Err(format!("{path}: invalid path component {bad:?}"));
    }
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| format!("{path}: empty path"))?;
    if *last != entry.name {
        return Err(format!("{path}: the entry is named {:?}", entry.name));
    }
    let mut list = root;
    for d in dirs {
        let i = match list.iter().position(|e| e.name == *d) {
            Some(i) => i,
            None => {
                list.push(Entry::directory(d, Vec::new(), dir_times));
                list.len() - 1
            }
        };
        list = match &mut list[i].kind {
            Kind::Directory(children) => children,
            _ => return Err(format!("{path}: {d} is not a directory")),
        };
    }
    if list.iter().any(|e| e.name == *last) {
        return Err(format!("{path}: already in the package"));
    }
    list.push(entry);
    Ok(())
}

/// The TOC's attribute tree for `entries`, appending file data to `heap`.
pub(crate) fn toc_attrs(entries: &[Entry], heap: &mut Vec<u8>) -> Vec<Attr> {
    entries.iter().map(|e| entry_attr(e, heap)).collect()
}

fn data_attr(data: &[u8], heap: &mut Vec<u8>) -> Attr {
    if data.len() <= format::MAX_INLINE_DATA {
        Attr::new(id::DATA, Value::RawInline(data.to_vec()))
    } else {
        let offset = heap.len() as u64;
        heap.extend_from_slice(data);
        Attr::new(
            id::DATA,
            Value::RawHeap {
                size: data.len() as u64,
                offset,
            },
        )
    }
}

fn entry_attr(e: &Entry, heap: &mut Vec<u8>) -> Attr {
    let mut c = Vec::new();
    let (ty, default) = e.type_and_default();
    if ty != file_type::FILE {
        c.push(Attr::uint(id::FILE_TYPE, ty));
    }
    if e.permissions != default {
        c.push(Attr::uint(id::FILE_PERMISSIONS, u64::from(e.permissions)));
    }
    for (attr_id, t) in [
        (id::FILE_ATIME, e.times.atime),
        (id::FILE_MTIME, e.times.mtime),
        (id::FILE_CRTIME, e.times.crtime),
    ] {
        if let Some(t) = t {
            c.push(Attr::uint(attr_id, t));
        }
    }
    match &e.kind {
        Kind::File(data) if !data.is_empty() => c.push(data_attr(data, heap)),
        Kind::Symlink(target) => c.push(Attr::string(id::SYMLINK_PATH, target.clone())),
        _ => {}
    }
    for a in &e.attributes {
        c.push(Attr::string(id::FILE_ATTRIBUTE, a.name.clone()).with(vec![
            Attr::uint(id::FILE_ATTRIBUTE_TYPE, u64::from(a.type_code)),
            data_attr(&a.data, heap),
        ]));
    }
    if let Kind::Directory(children) = &e.kind {
        for child in children {
            c.push(entry_attr(child, heap));
        }
    }
    Attr::string(id::DIRECTORY_ENTRY, e.name.clone()).with(c)
}

/// The entries of a TOC tree, reading data from the uncompressed `heap`. Errors name the
/// entry's path.
pub(crate) fn entries_from(
    attrs: &[Attr],
    heap: &[u8],
    parent: &str,
) -> Result<Vec<Entry>, String> {
    let mut out = Vec::new();
    for a in attrs {
        if a.id != id::DIRECTORY_ENTRY {
            // FileFormat.rst, "TOC Attributes": anything else is ignored.
            continue;
        }
        out.push(entry_from(a, heap, parent)?);
    }
    Ok(out)
}

fn raw_data(a: &Attr, heap: &[u8], path: &str) -> Result<Vec<u8>, String> {
    match &a.value {
        Value::RawInline(d) => Ok(d.clone()),
        Value::RawHeap { size, offset } => {
            let end = offset
                .checked_add(*size)
                .filter(|end| *end <= heap.len() as u64)
                .ok_or_else(|| format!("{path}: data at heap offset {offset}, {size} bytes, lies outside the heap ({} bytes)", heap.len()))?;
            Ok(heap[*offset as usize..end as usize].to_vec())
        }
        _ => Err(format!("{path}: data is not raw")),
    }
}

fn uint_of(a: &Attr, path: &str) -> Result<u64, String> {
    match a.value {
        Value::Uint(v) => Ok(v),
        _ => Err(format!(
            "{path}: {} is not a uint",
            crate::info::name_of(a.id)
        )),
    }
}

fn entry_from(a: &Attr, heap: &[u8], parent: &str) -> Result<Entry, String> {
    let Value::String(name) = &a.value else {
        return Err(format!("{parent}/: an entry name is not a string"));
    };
    let path = if parent.is_empty() {
        name.clone()
    } else {
        format!("{parent}/{name}")
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(format!("{path}: invalid entry name {name:?}"));
    }
    let mut ty = file_type::FILE;
    let mut permissions = None;
    let mut times = Times::default();
    let mut data = None;
    let mut target = None;
    let mut attributes = Vec::new();
    let mut children = Vec::new();
    for c in &a.children {
        match c.id {
            id::FILE_TYPE => ty = uint_of(c, &path)?,
            id::FILE_PERMISSIONS => {
                let p = uint_of(c, &path)?;
                permissions = Some(
                    u32::try_from(p)
                        .ok()
                        .filter(|p| *p <= 0o7777)
                        .ok_or_else(|| format!("{path}: permissions {p:#o} are not a mode"))?,
                );
            }
            id::FILE_ATIME => times.atime = Some(uint_of(c, &path)?),
            id::FILE_MTIME => times.mtime = Some(uint_of(c, &path)?),
            id::FILE_CRTIME => times.crtime = Some(uint_of(c, &path)?),
            id::DATA => data = Some(raw_data(c, heap, &path)?),
            id::SYMLINK_PATH => match &c.value {
                Value::String(s) => target = Some(s.clone()),
                _ => return Err(format!("{path}: symlink:path is not a string")),
            },
            id::FILE_ATTRIBUTE => {
                let Value::String(n) = &c.value else {
                    return Err(format!("{path}: an attribute name is not a string"));
                };
                let mut fa = FileAttribute {
                    name: n.clone(),
                    type_code: 0,
                    data: Vec::new(),
                };
                for g in &c.children {
                    match g.id {
                        id::FILE_ATTRIBUTE_TYPE => {
                            let t = uint_of(g, &path)?;
                            fa.type_code = u32::try_from(t).map_err(|_| {
                                format!("{path}: attribute type {t:#x} over 32 bits")
                            })?;
                        }
                        id::DATA => fa.data = raw_data(g, heap, &format!("{path} <{n}>"))?,
                        other => {
                            return Err(format!(
                                "{path} <{n}>: unexpected {}",
                                crate::info::name_of(other)
                            ))
                        }
                    }
                }
                attributes.push(fa);
            }
            id::DIRECTORY_ENTRY => children.push(entry_from(c, heap, &path)?),
            other => {
                return Err(format!(
                    "{path}: {} is not one this writer models",
                    crate::info::name_of(other)
                ))
            }
        }
    }
    let kind = match ty {
        file_type::FILE => Kind::File(data.clone().unwrap_or_default()),
        file_type::DIRECTORY => Kind::Directory(children.clone()),
        file_type::SYMLINK => Kind::Symlink(
            target
                .clone()
                .ok_or_else(|| format!("{path}: a symlink without symlink:path"))?,
        ),
        other => return Err(format!("{path}: unknown file type {other}")),
    };
    let stray = match kind {
        Kind::File(_) => !children.is_empty() || target.is_some(),
        Kind::Directory(_) => target.is_some() || data.is_some(),
        Kind::Symlink(_) => !children.is_empty() || data.is_some(),
    };
    if stray {
        return Err(format!(
            "{path}: children, data or a link target that its type has no use for"
        ));
    }
    let mut e = Entry {
        name: name.clone(),
        kind,
        permissions: 0,
        times,
        attributes,
    };
    e.permissions = permissions.unwrap_or(e.type_and_default().1);
    Ok(e)
}
