//! What Haiku's kernel loader does (`load_kernel_add_on` and what it calls, in
//! `src/system/kernel/elf.cpp` and `src/system/kernel/arch/x86/arch_elf.cpp`): its verdict
//! at each step, for a loader that maps and relocates (the simulator's). Each refusal is a
//! [`Refusal`] with Haiku's status; what it loads anyway but remarks on is a [`Note`].
//!
//! The steps, in Haiku's order: [`program_headers`] (verify_eheader), [`layout`] (which
//! PT_LOAD is text, which data, the reserved span), [`DynamicInfo::parse`]
//! (elf_parse_dynamic_section), [`relocation_tables`] and [`apply`] (elf_relocate,
//! arch_elf_relocate_rela), [`resolve`] (elf_resolve_symbol).

use object::elf;

use crate::elf::{round_down, round_up, AddressSpace, Dynamic, Ident, RawSym, Segment, SymKind};
use crate::elf::{PAGE, PHDR_SIZE};
use crate::rules::{reloc, Apply, Note, Refusal};

/// verify_eheader: the ELF magic, ELFCLASS64 and program headers at least as big as
/// `Elf64_Phdr`; then every program header, `e_phentsize` apart.
pub fn program_headers(data: &[u8]) -> Result<Vec<Segment>, Refusal> {
    let id = Ident::read(data);
    if !id.magic {
        return Err(Refusal::NotElf);
    }
    if id.class != Some(elf::ELFCLASS64) {
        return Err(Refusal::NotClass64);
    }
    if id.phoff == 0 || u64::from(id.phentsize) < PHDR_SIZE {
        return Err(Refusal::NoProgramHeaders);
    }
    (0..u64::from(id.phnum))
        .map(|i| {
            id.phoff
                .checked_add(i * u64::from(id.phentsize))
                .and_then(|at| Segment::read(data, at))
                .ok_or(Refusal::ProgramHeaderPastEnd)
        })
        .collect()
}

/// The regions load_kernel_add_on maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub text: Segment,
    pub data: Segment,
    pub dynamic: Segment,
    /// The address range reserved for the image, from 0.
    pub reserved: u64,
    pub notes: Vec<Note>,
}

impl Layout {
    /// The page-rounded text region, relative to the image's base.
    pub fn text_region(&self) -> (u64, u64) {
        region(&self.text)
    }
    /// The page-rounded data region, relative to the image's base.
    pub fn data_region(&self) -> (u64, u64) {
        region(&self.data)
    }
}

fn region(s: &Segment) -> (u64, u64) {
    (round_down(s.vaddr), round_up(s.vaddr + s.memsz))
}

/// Classifies the program headers as load_kernel_add_on does: the first writable PT_LOAD
/// (writable and executable counts as data only when there is more than one executable one)
/// is data, the first other executable one text, later ones are skipped and a PT_LOAD with
/// neither flag is never mapped; then the reserved span: no more than the two regions'
/// pages plus 8 KiB.
pub fn layout(segments: &[Segment]) -> Result<Layout, Refusal> {
    let executable = segments
        .iter()
        .filter(|p| p.is_load() && p.executable())
        .count();
    let mut notes = Vec::new();
    let (mut text, mut data, mut dynamic) = (None, None, None);
    for p in segments {
        match p.p_type {
            elf::PT_LOAD => {
                if p.writable() && (!p.executable() || executable > 1) {
                    if data.is_none() {
                        data = Some(p.clone());
                    } else {
                        notes.push(Note::SecondData);
                    }
                } else if p.executable() {
                    if text.is_none() {
                        text = Some(p.clone());
                    } else {
                        notes.push(Note::SecondText);
                    }
                } else {
                    notes.push(Note::WeirdFlags(p.flags, p.vaddr));
                }
            }
            elf::PT_DYNAMIC => dynamic = Some(p.clone()),
            elf::PT_INTERP | elf::PT_PHDR | elf::PT_GNU_STACK | elf::PT_GNU_EH_FRAME => {}
            other => notes.push(Note::UnhandledProgramHeader(other)),
        }
    }
    let (Some(text), Some(data)) = (text, data) else {
        return Err(Refusal::MissingTextOrData);
    };
    let Some(dynamic) = dynamic else {
        return Err(Refusal::NoDynamic);
    };
    let last = if text.vaddr > data.vaddr {
        &text
    } else {
        &data
    };
    let reserved = round_up(last.vaddr + last.memsz);
    let pages = |s: &Segment| round_up(s.vaddr + s.memsz) - round_down(s.vaddr);
    if reserved > pages(&text) + pages(&data) + 2 * PAGE {
        return Err(Refusal::Span(reserved));
    }
    Ok(Layout {
        text,
        data,
        dynamic,
        reserved,
        notes,
    })
}

/// The file bytes of a region's segment, checked against the reservation.
pub fn segment_bytes<'a>(
    data: &'a [u8],
    seg: &Segment,
    reserved: u64,
) -> Result<&'a [u8], Refusal> {
    let src = data
        .get(seg.offset as usize..(seg.offset + seg.filesz) as usize)
        .ok_or(Refusal::SegmentPastEnd)?;
    if seg.filesz > seg.memsz || seg.vaddr + seg.memsz > reserved {
        return Err(Refusal::SegmentSizes);
    }
    Ok(src)
}

/// What elf_parse_dynamic_section takes from the dynamic section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicInfo {
    pub hash: u64,
    pub strtab: u64,
    pub symtab: u64,
    /// DT_SYMBOLIC or DF_SYMBOLIC: the image's own symbols are looked up first.
    pub symbolic: bool,
    pub dynamic: Dynamic,
    pub notes: Vec<Note>,
}

impl DynamicInfo {
    /// Reads the dynamic section at `vaddr` and judges it.
    pub fn parse(space: &impl AddressSpace, vaddr: u64) -> Result<Self, Refusal> {
        let dynamic = Dynamic::read(space, vaddr).ok_or(Refusal::DynamicUnmapped)?;
        let mut notes = Vec::new();
        let mut symbolic = false;
        for (tag, val) in dynamic.tags() {
            let tag = tag as u32;
            if tag == elf::DT_SYMBOLIC
                || (tag == elf::DT_FLAGS && val & u64::from(elf::DF_SYMBOLIC) != 0)
            {
                symbolic = true;
            }
            if tag == crate::elf::DT_RELR {
                notes.push(Note::RelrSkipped);
            }
            if matches!(
                tag,
                elf::DT_INIT | elf::DT_FINI | elf::DT_INIT_ARRAY | elf::DT_FINI_ARRAY
            ) {
                notes.push(Note::NeverRun(u64::from(tag)));
            }
        }
        let (Some(hash), Some(strtab), Some(symtab)) = (
            dynamic.get(elf::DT_HASH),
            dynamic.get(elf::DT_STRTAB),
            dynamic.get(elf::DT_SYMTAB),
        ) else {
            return Err(Refusal::MissingHashSymtabStrtab);
        };
        if dynamic.get(elf::DT_REL).is_some() {
            return Err(Refusal::DtRel);
        }
        Ok(Self {
            hash,
            strtab,
            symtab,
            symbolic,
            dynamic,
            notes,
        })
    }

    /// The number of dynamic symbols: DT_HASH's nchain.
    pub fn symbol_count(&self, space: &impl AddressSpace) -> Result<u64, Refusal> {
        crate::elf::hash_counts(space, self.hash)
            .map(|(_, nchain)| u64::from(nchain))
            .ok_or(Refusal::HashUnmapped)
    }

    /// Symbol `index`, `None` past the mapped table.
    pub fn symbol(&self, space: &impl AddressSpace, index: u64) -> Option<RawSym> {
        RawSym::read(space, self.symtab, index)
    }

    /// A symbol's name as the loader compares it (bytes that are not UTF-8 name nothing).
    pub fn name(&self, space: &impl AddressSpace, sym: &RawSym) -> Option<String> {
        let at = self.strtab.checked_add(u64::from(sym.name))?;
        String::from_utf8(space.c_str(at)?.to_vec()).ok()
    }

    /// The image's own defined, global and weak symbols (symbols 1 to nchain - 1) with
    /// their names, in table order.
    pub fn exports(&self, space: &impl AddressSpace) -> Result<Vec<(String, RawSym)>, Refusal> {
        let mut out = Vec::new();
        for index in 1..self.symbol_count(space)? {
            let s = self.symbol(space, index).ok_or(Refusal::SymtabUnmapped)?;
            if !s.is_undefined() && s.bind != elf::STB_LOCAL {
                if let Some(n) = self.name(space, &s) {
                    out.push((n, s));
                }
            }
        }
        Ok(out)
    }
}

/// One relocation table elf_relocate applies: address and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelocTable {
    pub addr: u64,
    pub size: u64,
}

/// The tables elf_relocate applies, in its order: the PLT relocations (DT_JMPREL, which must
/// be RELA), then DT_RELA. A table without an address or a size is skipped.
pub fn relocation_tables(dynamic: &Dynamic) -> Result<Vec<RelocTable>, Refusal> {
    let tables = [
        (
            dynamic.get(elf::DT_JMPREL),
            dynamic.get(elf::DT_PLTRELSZ),
            dynamic.get(elf::DT_PLTREL),
        ),
        (
            dynamic.get(elf::DT_RELA),
            dynamic.get(elf::DT_RELASZ),
            Some(u64::from(elf::DT_RELA)),
        ),
    ];
    let mut out = Vec::new();
    for (addr, size, kind) in tables {
        let (Some(addr), Some(size)) = (addr, size) else {
            continue;
        };
        if kind != Some(u64::from(elf::DT_RELA)) {
            return Err(Refusal::PltNotRela);
        }
        out.push(RelocTable { addr, size });
    }
    Ok(out)
}

/// How arch_elf_relocate_rela applies a relocation of type `t` found at `offset`.
pub fn apply(t: u32, offset: u64) -> Result<Apply, Refusal> {
    reloc(t).haiku.ok_or(Refusal::UnhandledReloc(t, offset))
}

/// The value arch_elf_relocate_rela writes: `s` the symbol's value (0 without one), `a` the
/// addend, `base` the image's base.
pub fn value(how: Apply, s: u64, a: u64, offset: u64, base: u64) -> u64 {
    match how {
        Apply::None => 0,
        Apply::Absolute => s.wrapping_add(a),
        Apply::Pc32 => s.wrapping_add(a).wrapping_sub(offset),
        Apply::Symbol => s,
        Apply::Relative => base.wrapping_add(a),
    }
}

/// A definition found for a symbol: address, ELF type, weak.
pub type Definition = (u64, SymKind, bool);

/// elf_resolve_symbol: a local symbol is the image's own; any other is looked up in the
/// kernel then in the image (the image first with DT_SYMBOLIC), a weak definition giving
/// way to a strong one in the second place; an undefined reference must find a definition
/// of its own ELF type, and an unresolved weak one is 0.
pub fn resolve(
    sym: &RawSym,
    base: u64,
    symbolic: bool,
    name: impl FnOnce() -> String,
    kernel: impl FnOnce(&str) -> Option<Definition>,
    own: impl FnOnce(&str) -> Option<Definition>,
) -> Result<u64, Refusal> {
    if sym.bind == elf::STB_LOCAL {
        return Ok(base + sym.value);
    }
    let n = name();
    let from_kernel = kernel(&n);
    let from_self = own(&n);
    let (first, second) = if symbolic {
        (from_self, from_kernel)
    } else {
        (from_kernel, from_self)
    };
    let found = match (first, second) {
        (Some(f), Some(s)) if f.2 && !s.2 => Some(s),
        (Some(f), _) => Some(f),
        (None, s) => s,
    };
    match found {
        None if sym.bind == elf::STB_WEAK => Ok(0),
        None => Err(Refusal::Unresolved(n)),
        Some((addr, kind, _)) => {
            if sym.is_undefined() && kind != sym.kind {
                return Err(Refusal::WrongType(n, sym.kind, kind));
            }
            Ok(addr)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(flags: u32, vaddr: u64, memsz: u64) -> Segment {
        Segment {
            p_type: elf::PT_LOAD,
            flags,
            offset: vaddr,
            vaddr,
            filesz: memsz,
            memsz,
        }
    }

    fn dynamic() -> Segment {
        Segment {
            p_type: elf::PT_DYNAMIC,
            ..load(elf::PF_R | elf::PF_W, 0x3000, 0x100)
        }
    }

    const RX: u32 = elf::PF_R | elf::PF_X;
    const RW: u32 = elf::PF_R | elf::PF_W;

    #[test]
    fn layout_takes_the_first_text_and_data_and_notes_the_rest() {
        let segs = [
            load(elf::PF_R, 0, 0x100),
            load(RX, 0x1000, 0x800),
            load(RW, 0x2000, 0x1800),
            load(RW, 0x4000, 0x10),
            Segment {
                p_type: elf::PT_TLS,
                ..load(elf::PF_R, 0x2000, 8)
            },
            dynamic(),
        ];
        let l = layout(&segs).unwrap();
        assert_eq!((l.text.vaddr, l.data.vaddr), (0x1000, 0x2000));
        assert_eq!(l.reserved, 0x4000);
        assert_eq!(l.text_region(), (0x1000, 0x2000));
        assert_eq!(l.data_region(), (0x2000, 0x4000));
        assert_eq!(
            l.notes,
            [
                Note::WeirdFlags(elf::PF_R, 0),
                Note::SecondData,
                Note::UnhandledProgramHeader(elf::PT_TLS)
            ]
        );
        // One R+W+X PT_LOAD alone is text, so there is no data.
        let rwx = [load(RX | RW, 0, 0x1000), dynamic()];
        assert_eq!(layout(&rwx), Err(Refusal::MissingTextOrData));
        // With two executable ones, the writable one is data.
        let two = [
            load(RX, 0, 0x1000),
            load(RX | RW, 0x1000, 0x1000),
            dynamic(),
        ];
        assert_eq!(layout(&two).unwrap().data.vaddr, 0x1000);
        assert_eq!(
            layout(&[load(RX, 0, 0x1000), load(RW, 0x1000, 0x10)]),
            Err(Refusal::NoDynamic)
        );
    }

    #[test]
    fn layout_refuses_more_than_8_kib_of_gaps() {
        // Text 1 page, data 1 page: a span of up to 4 pages is allowed.
        let at = |data: u64| layout(&[load(RX, 0, 0x1000), load(RW, data, 0x10), dynamic()]);
        assert_eq!(at(0x3000).unwrap().reserved, 0x4000);
        assert_eq!(at(0x4000), Err(Refusal::Span(0x5000)));
    }

    #[test]
    fn program_headers_follow_verify_eheader() {
        assert_eq!(program_headers(b"not an elf"), Err(Refusal::NotElf));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = elf::ELFCLASS32;
        assert_eq!(program_headers(&h), Err(Refusal::NotClass64));
        h[4] = elf::ELFCLASS64;
        assert_eq!(program_headers(&h), Err(Refusal::NoProgramHeaders));
        // e_phoff 64, e_phentsize 64 (bigger than Elf64_Phdr: allowed), e_phnum 2.
        h[32] = 64;
        h[54] = 64;
        h[56] = 2;
        h.resize(64 + 64 + 56, 0);
        h[64] = 1; // PT_LOAD
        h[128] = 2; // PT_DYNAMIC
        let segs = program_headers(&h).unwrap();
        assert_eq!(
            segs.iter().map(|s| s.p_type).collect::<Vec<_>>(),
            [elf::PT_LOAD, elf::PT_DYNAMIC]
        );
        h.truncate(64 + 64 + 55);
        assert_eq!(program_headers(&h), Err(Refusal::ProgramHeaderPastEnd));
        h[54] = 32;
        assert_eq!(program_headers(&h), Err(Refusal::NoProgramHeaders));
    }

    fn sym(bind: u8, kind: SymKind, undefined: bool) -> RawSym {
        RawSym {
            name: 0,
            kind,
            bind,
            shndx: if undefined { 0 } else { 1 },
            value: 0x40,
            size: 0,
        }
    }

    #[test]
    fn resolve_looks_in_the_kernel_first_unless_symbolic() {
        let f = SymKind::Func;
        let import = sym(elf::STB_GLOBAL, f, true);
        let name = || "x".to_string();
        let kernel = |_: &str| Some((0x1000, f, false));
        let own = |_: &str| Some((0x2000, f, false));
        assert_eq!(resolve(&import, 0, false, name, kernel, own), Ok(0x1000));
        assert_eq!(resolve(&import, 0, true, name, kernel, own), Ok(0x2000));
        // A weak definition found first gives way to a strong one.
        let weak_own = |_: &str| Some((0x2000, f, true));
        assert_eq!(
            resolve(&import, 0, true, name, kernel, weak_own),
            Ok(0x1000)
        );
        // A local symbol is the image's own: base + value.
        let local = sym(elf::STB_LOCAL, f, false);
        assert_eq!(
            resolve(&local, 0x10000, false, name, kernel, own),
            Ok(0x10040)
        );
        // Unresolved: an error, or 0 for a weak reference.
        let none = |_: &str| None;
        assert_eq!(
            resolve(&import, 0, false, name, none, none),
            Err(Refusal::Unresolved("x".into()))
        );
        let weak = sym(elf::STB_WEAK, f, true);
        assert_eq!(resolve(&weak, 0, false, name, none, none), Ok(0));
        // An undefined reference must match the definition's ELF type.
        let data = |_: &str| Some((0x1000, SymKind::Object, false));
        assert_eq!(
            resolve(&import, 0, false, name, data, none),
            Err(Refusal::WrongType("x".into(), f, SymKind::Object))
        );
    }

    #[test]
    fn values_follow_arch_elf_relocate_rela() {
        let (s, a, offset, base) = (0x5000, 0x10, 0x2000, 0x7f00_0000_0000);
        assert_eq!(value(Apply::Absolute, s, a, offset, base), 0x5010);
        // Haiku's PC32: S + A - r_offset, not - (base + r_offset).
        assert_eq!(value(Apply::Pc32, s, a, offset, base), 0x3010);
        assert_eq!(value(Apply::Symbol, s, a, offset, base), 0x5000);
        assert_eq!(value(Apply::Relative, s, a, offset, base), 0x7f00_0000_0010);
    }
}
