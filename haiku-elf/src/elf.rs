//! The one ELF reader of the crate: the records Haiku's kernel loader reads (the ELF
//! header's program-header fields, program headers, the dynamic section, dynamic symbols,
//! the SysV hash table's counts, RELA relocations) decoded with `object`'s record types.
//!
//! The loader reads the dynamic section and everything it points at by virtual address,
//! never through section headers. Where those addresses lead is the caller's
//! [`AddressSpace`]: the file seen through its PT_LOADs for the audit ([`FileSpace`]), the
//! mapped image for the simulator's loader.

use object::elf;
use object::read::elf::{Dyn as _, ProgramHeader as _, Rela as _, Sym as _};
use object::{LittleEndian as LE, ReadRef as _};

/// Haiku's page size on x86_64 (`B_PAGE_SIZE`).
pub const PAGE: u64 = 0x1000;
/// Packed relative relocations (`-z pack-relative-relocs`); `object` has no names for them.
pub const DT_RELRSZ: u32 = 35;
pub const DT_RELR: u32 = 36;
/// The size of one `Elf64_Sym`, `Elf64_Rela` and `Elf64_Dyn`.
pub const SYM_SIZE: u64 = std::mem::size_of::<elf::Sym64<LE>>() as u64;
pub const RELA_SIZE: u64 = std::mem::size_of::<elf::Rela64<LE>>() as u64;
pub const DYN_SIZE: u64 = std::mem::size_of::<elf::Dyn64<LE>>() as u64;
/// The size of one `Elf64_Phdr`, the smallest `e_phentsize` Haiku accepts.
pub const PHDR_SIZE: u64 = std::mem::size_of::<elf::ProgramHeader64<LE>>() as u64;

pub fn round_down(x: u64) -> u64 {
    x / PAGE * PAGE
}

pub fn round_up(x: u64) -> u64 {
    x.div_ceil(PAGE) * PAGE
}

/// The ELF header fields the program headers are found with, read as far as the file holds
/// them (a field past the end reads as 0), as `verify_eheader` sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    /// `\x7fELF`.
    pub magic: bool,
    /// `EI_CLASS` (`ELFCLASS64` is 2).
    pub class: Option<u8>,
    pub phoff: u64,
    pub phentsize: u16,
    pub phnum: u16,
}

impl Ident {
    pub fn read(data: &[u8]) -> Self {
        let u16_at = |o: u64| data.read_at::<object::U16<LE>>(o).map_or(0, |v| v.get(LE));
        let u64_at = |o: u64| data.read_at::<object::U64<LE>>(o).map_or(0, |v| v.get(LE));
        Self {
            magic: data.get(..4) == Some(&elf::ELFMAG[..]),
            class: data.get(4).copied(),
            phoff: u64_at(32),
            phentsize: u16_at(54),
            phnum: u16_at(56),
        }
    }
}

/// A program header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

impl From<&elf::ProgramHeader64<LE>> for Segment {
    fn from(p: &elf::ProgramHeader64<LE>) -> Self {
        Self {
            p_type: p.p_type(LE),
            flags: p.p_flags(LE),
            offset: p.p_offset(LE),
            vaddr: p.p_vaddr(LE),
            filesz: p.p_filesz(LE),
            memsz: p.p_memsz(LE),
        }
    }
}

impl Segment {
    /// The program header at file offset `offset`, if the file holds all of it.
    pub fn read(data: &[u8], offset: u64) -> Option<Self> {
        data.read_at::<elf::ProgramHeader64<LE>>(offset)
            .ok()
            .map(Self::from)
    }
    pub fn is_load(&self) -> bool {
        self.p_type == elf::PT_LOAD
    }
    pub fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
    pub fn writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
    /// The page-rounded region Haiku maps for a PT_LOAD.
    pub fn mapped(&self) -> (u64, u64) {
        let start = self.vaddr & !(PAGE - 1);
        (start, start + round_up(self.memsz + self.vaddr % PAGE))
    }
    /// The file offset of `vaddr..vaddr+len`, if the file holds those bytes.
    pub fn file_offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        let rel = vaddr.checked_sub(self.vaddr)?;
        (rel.checked_add(len)? <= self.filesz).then(|| self.offset + rel)
    }
    pub fn describe(&self, index: usize) -> String {
        format!(
            "{} #{index} ({}, vaddr {:#x}, memsz {:#x})",
            segment_type_name(self.p_type),
            flags_str(self.flags),
            self.vaddr,
            self.memsz
        )
    }
}

pub fn flags_str(flags: u32) -> String {
    let bit = |b, c| if flags & b != 0 { c } else { ' ' };
    [
        bit(elf::PF_R, 'R'),
        bit(elf::PF_W, 'W'),
        bit(elf::PF_X, 'E'),
    ]
    .iter()
    .collect()
}

pub fn segment_type_name(t: u32) -> String {
    match t {
        elf::PT_NULL => "NULL".into(),
        elf::PT_LOAD => "LOAD".into(),
        elf::PT_DYNAMIC => "DYNAMIC".into(),
        elf::PT_INTERP => "INTERP".into(),
        elf::PT_NOTE => "NOTE".into(),
        elf::PT_PHDR => "PHDR".into(),
        elf::PT_TLS => "TLS".into(),
        elf::PT_GNU_EH_FRAME => "GNU_EH_FRAME".into(),
        elf::PT_GNU_STACK => "GNU_STACK".into(),
        elf::PT_GNU_RELRO => "GNU_RELRO".into(),
        elf::PT_GNU_PROPERTY => "GNU_PROPERTY".into(),
        other => format!("{other:#x}"),
    }
}

/// Where the loader's virtual addresses lead.
pub trait AddressSpace {
    /// `vaddr..vaddr+len`, if all of it is there.
    fn bytes(&self, vaddr: u64, len: u64) -> Option<&[u8]>;
    /// The bytes of the NUL-terminated string at `vaddr`, without the NUL.
    fn c_str(&self, vaddr: u64) -> Option<&[u8]>;

    fn u64_at(&self, vaddr: u64) -> Option<u64> {
        self.bytes(vaddr, 8)?
            .read_at::<object::U64<LE>>(0)
            .ok()
            .map(|v| v.get(LE))
    }
}

/// The file seen through its PT_LOADs: a virtual address is read from the file bytes of the
/// PT_LOAD that holds it.
pub struct FileSpace<'a> {
    pub data: &'a [u8],
    pub segments: Vec<Segment>,
}

impl<'a> FileSpace<'a> {
    fn offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.is_load())
            .find_map(|s| s.file_offset(vaddr, len))
    }
    pub fn file_bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let off = self.offset(vaddr, len)?;
        self.data.read_bytes_at(off, len).ok()
    }
    /// A NUL-terminated string at `vaddr`, read on to the end of the file if need be.
    pub fn string(&self, vaddr: u64) -> Option<String> {
        Some(String::from_utf8_lossy(self.c_str(vaddr)?).into_owned())
    }
    /// Inside a region Haiku maps (the first executable and first writable PT_LOAD).
    pub fn in_mapped_region(&self, vaddr: u64) -> bool {
        let loads = || self.segments.iter().filter(|s| s.is_load());
        let text = loads().find(|s| s.executable() && !s.writable());
        let data = loads().find(|s| s.writable() && !s.executable());
        let rwx = loads().find(|s| s.writable() && s.executable());
        [text, data, rwx].into_iter().flatten().any(|s| {
            let (start, end) = s.mapped();
            (start..end).contains(&vaddr)
        })
    }
}

impl AddressSpace for FileSpace<'_> {
    fn bytes(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        self.file_bytes(vaddr, len)
    }
    fn c_str(&self, vaddr: u64) -> Option<&[u8]> {
        let off = self.offset(vaddr, 1)?;
        let end = self.data.len() as u64;
        self.data.read_bytes_at_until(off..end, 0).ok()
    }
}

/// The dynamic section up to DT_NULL, by tag (a tag may repeat, e.g. DT_NEEDED).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dynamic(pub Vec<(i64, u64)>);

impl Dynamic {
    /// From the records of a PT_DYNAMIC as the file holds them.
    pub fn from_records(entries: &[elf::Dyn64<LE>]) -> Self {
        Self(
            entries
                .iter()
                .map(|d| (d.d_tag(LE) as i64, d.d_val(LE)))
                .take_while(|(t, _)| *t != i64::from(elf::DT_NULL))
                .collect(),
        )
    }

    /// Read at `vaddr` in `space`, one entry after the other up to DT_NULL, as Haiku's
    /// `elf_parse_dynamic_section` walks it; `None` if an entry is not there first.
    pub fn read(space: &impl AddressSpace, vaddr: u64) -> Option<Self> {
        let mut entries = Vec::new();
        for i in 0.. {
            let at = vaddr.checked_add(i * DYN_SIZE)?;
            let tag = space.u64_at(at)? as i64;
            let val = space.u64_at(at + 8)?;
            if tag == i64::from(elf::DT_NULL) {
                break;
            }
            entries.push((tag, val));
        }
        Some(Self(entries))
    }

    /// The first value of `tag`.
    pub fn get(&self, tag: u32) -> Option<u64> {
        let tag = i64::from(tag);
        self.0.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }
    pub fn all(&self, tag: u32) -> impl Iterator<Item = u64> + '_ {
        let tag = i64::from(tag);
        self.0
            .iter()
            .filter(move |(t, _)| *t == tag)
            .map(|(_, v)| *v)
    }
    /// Every tag, in order.
    pub fn tags(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().map(|&(t, v)| (t as u64, v))
    }
}

/// `nbucket` and `nchain` of the SysV hash table at `vaddr` (`nchain` is the number of
/// dynamic symbols).
pub fn hash_counts(space: &impl AddressSpace, vaddr: u64) -> Option<(u32, u32)> {
    let b = space.bytes(vaddr, 8)?;
    let w = |o: u64| b.read_at::<object::U32<LE>>(o).map(|v| v.get(LE)).ok();
    Some((w(0)?, w(4)?))
}

/// The ELF type of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymKind {
    Func,
    Object,
    NoType,
    Other(u8),
}

impl SymKind {
    pub fn from_st_type(t: u8) -> Self {
        match t {
            elf::STT_FUNC => Self::Func,
            elf::STT_OBJECT => Self::Object,
            elf::STT_NOTYPE => Self::NoType,
            other => Self::Other(other),
        }
    }
}

impl std::fmt::Display for SymKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Func => f.write_str("FUNC"),
            Self::Object => f.write_str("OBJECT"),
            Self::NoType => f.write_str("NOTYPE"),
            Self::Other(elf::STT_TLS) => f.write_str("TLS"),
            Self::Other(elf::STT_GNU_IFUNC) => f.write_str("GNU_IFUNC"),
            Self::Other(t) => write!(f, "type {t}"),
        }
    }
}

/// A dynamic symbol as its table holds it (the name is an offset into DT_STRTAB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSym {
    pub name: u32,
    pub kind: SymKind,
    pub bind: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

impl From<&elf::Sym64<LE>> for RawSym {
    fn from(s: &elf::Sym64<LE>) -> Self {
        Self {
            name: s.st_name(LE),
            kind: SymKind::from_st_type(s.st_type()),
            bind: s.st_bind(),
            shndx: s.st_shndx(LE),
            value: s.st_value(LE),
            size: s.st_size(LE),
        }
    }
}

impl RawSym {
    /// Symbol `index` of the table at `symtab`.
    pub fn read(space: &impl AddressSpace, symtab: u64, index: u64) -> Option<Self> {
        let b = space.bytes(symtab.checked_add(index.checked_mul(SYM_SIZE)?)?, SYM_SIZE)?;
        b.read_at::<elf::Sym64<LE>>(0).ok().map(Self::from)
    }

    /// `count` symbols of the table at `symtab`, if all of them are there.
    pub fn read_table(space: &impl AddressSpace, symtab: u64, count: u64) -> Option<Vec<Self>> {
        let b = space.bytes(symtab, count.checked_mul(SYM_SIZE)?)?;
        let raw = b.read_slice_at::<elf::Sym64<LE>>(0, count as usize).ok()?;
        Some(raw.iter().map(Self::from).collect())
    }

    pub fn is_undefined(&self) -> bool {
        self.shndx == elf::SHN_UNDEF
    }

    pub fn is_weak(&self) -> bool {
        self.bind == elf::STB_WEAK
    }
}

/// One RELA relocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rela {
    pub offset: u64,
    pub r_type: u32,
    /// The dynamic symbol's index; 0 for none.
    pub sym: u32,
    pub addend: i64,
}

impl From<&elf::Rela64<LE>> for Rela {
    fn from(r: &elf::Rela64<LE>) -> Self {
        Self {
            offset: r.r_offset(LE),
            r_type: r.r_type(LE, false),
            sym: r.r_sym(LE, false),
            addend: r.r_addend(LE),
        }
    }
}

impl Rela {
    /// Entry `index` of the table at `vaddr`.
    pub fn read(space: &impl AddressSpace, vaddr: u64, index: u64) -> Option<Self> {
        let b = space.bytes(vaddr.checked_add(index.checked_mul(RELA_SIZE)?)?, RELA_SIZE)?;
        b.read_at::<elf::Rela64<LE>>(0).ok().map(Self::from)
    }

    /// The whole table of `size` bytes at `vaddr`, if all of it is there.
    pub fn read_table(space: &impl AddressSpace, vaddr: u64, size: u64) -> Option<Vec<Self>> {
        let b = space.bytes(vaddr, size)?;
        let raw = b
            .read_slice_at::<elf::Rela64<LE>>(0, (size / RELA_SIZE) as usize)
            .ok()?;
        Some(raw.iter().map(Self::from).collect())
    }
}
