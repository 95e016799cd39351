//! The audit: does Haiku's kernel ELF loader accept this add-on, and load it as meant?
//!
//! The checks follow `load_kernel_add_on` (`src/system/kernel/elf.cpp`) and
//! `arch_elf_relocate_rela` (`src/system/kernel/arch/x86/arch_elf.cpp`); [`crate::rules`]
//! says for each rule what Haiku does and what the audit requires, which is stricter where
//! Haiku loads a file but not as meant. The file is read the way the loader reads it:
//! program headers and the dynamic section, never section headers. Section headers, when
//! present, only say which bytes are code and name functions.
//!
//! Every violation has a stable rule name ([`crate::rules::RULES`]) and a message naming the
//! symbol, relocation offset or instruction address.
//!
//! One rule is not the loader's but its kernel debugger's: [`FRAME_POINTER`], that a
//! backtrace can walk through the add-on (see [`crate::scan::check_frames`] for the
//! criterion and why).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use object::elf;
use object::read::elf::{FileHeader as _, ProgramHeader as _, SectionHeader as _, Sym as _};
use object::LittleEndian as LE;

use crate::elf::{flags_str, segment_type_name, SymKind, SYM_SIZE};
use crate::elf::{hash_counts, AddressSpace as _, Dynamic, FileSpace, RawSym, Rela, Segment};
use crate::elf::{round_up, PAGE};
use crate::rules::{reloc, reloc_name};
pub use crate::rules::{
    DT_HASH, ELF, FRAME_POINTER, IMPORTS, INITIALIZERS, MODULES, RED_ZONE, RELOCATIONS, SEGMENTS,
    TLS,
};
use crate::scan::{check_frames, unwind_functions, Scan};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// One of [`crate::rules::RULES`].
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

pub(crate) fn violation(rule: &'static str, message: impl Into<String>) -> Violation {
    Violation {
        rule,
        message: message.into(),
    }
}

/// The audit failed: every violation, in rule order.
#[derive(Debug)]
pub struct Failed {
    pub file: PathBuf,
    pub violations: Vec<Violation>,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.violations.len();
        let debugger = self.violations.iter().any(|v| v.rule == FRAME_POINTER);
        let what = match (
            self.violations.iter().all(|v| v.rule == FRAME_POINTER),
            debugger,
        ) {
            (true, _) => "Haiku's kernel debugger could not walk its stack",
            (false, true) => {
                "Haiku's kernel loader would refuse or mis-load it, and its kernel debugger \
                 could not walk its stack"
            }
            (false, false) => "Haiku's kernel loader would refuse or mis-load it",
        };
        write!(
            f,
            "{}: {what} ({n} violation{}):",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failed {}

/// A symbol, as the report lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub kind: SymKind,
    pub weak: bool,
    pub value: u64,
    pub size: u64,
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.kind)?;
        if self.weak {
            f.write_str(" weak")?;
        }
        Ok(())
    }
}

/// What an accepted add-on contains.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub file_size: u64,
    pub segments: Vec<Segment>,
    /// DT_NEEDED entries (Haiku parses them but loads nothing).
    pub needed: Vec<String>,
    /// Dynamic relocations (DT_RELA and DT_JMPREL) by type.
    pub relocations: BTreeMap<u32, usize>,
    /// Undefined dynamic symbols, resolved against the kernel.
    pub imports: Vec<Symbol>,
    /// Defined global and weak dynamic symbols.
    pub exports: Vec<Symbol>,
    /// Defined functions, sorted by address, from `.symtab` or else `.dynsym`.
    pub functions: Vec<Symbol>,
    /// Where `functions` came from: ".symtab" or ".dynsym".
    pub functions_from: &'static str,
    /// Executable bytes decoded, where they came from, and the instructions found.
    pub code_bytes: u64,
    pub code_from: String,
    pub instructions: u64,
    /// What the frame-pointer rule found.
    pub frames: Frames,
}

/// The functions the frame-pointer rule examined ([`check_frames`]).
#[derive(Debug, Clone, Default)]
pub struct Frames {
    pub functions: usize,
    /// Where their starts came from (symbols, PT_GNU_EH_FRAME).
    pub from: String,
    /// Functions that set up rbp as their frame pointer.
    pub framed: usize,
    /// Functions that break the rule (one violation each).
    pub broken: usize,
    /// Functions without a frame that make no call and leave rbp alone: address and
    /// demangled name (empty without a symbol).
    pub leaves: Vec<(u64, String)>,
}

impl Report {
    /// Names of the defined functions that start with any of `prefixes` (e.g. the mangled
    /// `_ZN4core`, `_ZN5alloc`, `_RNvNtCs…4core`), for a caller that wants to show which
    /// precompiled library code the add-on contains. Empty when the file has no `.symtab`.
    pub fn functions_containing(&self, needles: &[&str]) -> Vec<&str> {
        self.functions
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| needles.iter().any(|p| n.contains(p)))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "size: {} bytes", self.file_size)?;
        writeln!(f, "segments:")?;
        for s in &self.segments {
            writeln!(
                f,
                "  {:<12} {} offset {:#08x} vaddr {:#08x} filesz {:#07x} memsz {:#07x}",
                segment_type_name(s.p_type),
                flags_str(s.flags),
                s.offset,
                s.vaddr,
                s.filesz,
                s.memsz
            )?;
        }
        if !self.needed.is_empty() {
            writeln!(
                f,
                "needed (parsed, never loaded by Haiku): {}",
                self.needed.join(", ")
            )?;
        }
        let total: usize = self.relocations.values().sum();
        write!(f, "dynamic relocations: {total}")?;
        for (i, (t, n)) in self.relocations.iter().enumerate() {
            let sep = if i == 0 { " (" } else { ", " };
            write!(f, "{sep}{n} {}", reloc_name(*t))?;
        }
        writeln!(f, "{}", if total == 0 { "" } else { ")" })?;
        let list = |f: &mut fmt::Formatter<'_>, what: &str, syms: &[Symbol]| {
            writeln!(f, "{what} ({}):", syms.len())?;
            syms.iter().try_for_each(|s| writeln!(f, "  {s}"))
        };
        list(f, "imports", &self.imports)?;
        list(f, "exports", &self.exports)?;
        writeln!(
            f,
            "defined functions ({}, from {}):",
            self.functions.len(),
            self.functions_from
        )?;
        for s in &self.functions {
            writeln!(f, "  {:#08x} {:>6} {}", s.value, s.size, s.name)?;
        }
        writeln!(
            f,
            "code: {} bytes ({}), {} instructions, none below rsp",
            self.code_bytes, self.code_from, self.instructions
        )?;
        write!(f, "{}", self.frames)
    }
}

impl fmt::Display for Frames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.leaves.len();
        write!(
            f,
            "frame pointers: {} of {} functions (from {}) set up rbp before any call; {}; \
             {k} frameless lea{} (no call, rbp untouched){}",
            self.framed,
            self.functions,
            self.from,
            match self.broken {
                0 => "none calls without it or uses rbp otherwise".to_string(),
                n => format!("{n} call without it or use rbp otherwise"),
            },
            if k == 1 { "f" } else { "ves" },
            if k == 0 { "" } else { ":" }
        )?;
        for (addr, name) in &self.leaves {
            write!(f, "\n  {addr:#08x}")?;
            if !name.is_empty() {
                write!(f, " {name}")?;
            }
        }
        Ok(())
    }
}

/// Audits the ELF file at `path`. `imports` is the kernel import table: name and ELF type.
pub fn audit(path: &Path, imports: &[(String, SymKind)]) -> Result<Report, Vec<Violation>> {
    let data = std::fs::read(path).map_err(|e| {
        vec![violation(
            ELF,
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    audit_bytes(&data, imports)
}

/// The kernel import table the audit holds an add-on to: every symbol of
/// [`spec::haiku_driver::KERNEL_IMPORTS`] (generated from `spec/haiku_driver.toml`) that both
/// R1/beta5's and nightly's kernels export, with its ELF type. The add-on loads on both, so a
/// symbol only one release exports (`only_in`) is refused like one the table does not have.
pub fn kernel_imports() -> Vec<(String, SymKind)> {
    spec::haiku_driver::KERNEL_IMPORTS
        .iter()
        .filter(|i| i.only_in.is_none())
        .map(|i| {
            let kind = match i.elf {
                spec::kernel_import::SymbolType::Func => SymKind::Func,
                spec::kernel_import::SymbolType::Object => SymKind::Object,
            };
            (i.name.to_string(), kind)
        })
        .collect()
}

/// Audits an ELF image held in memory.
pub fn audit_bytes(data: &[u8], imports: &[(String, SymKind)]) -> Result<Report, Vec<Violation>> {
    let mut out = Vec::new();
    let report = audit_into(data, imports, &mut out);
    if out.is_empty() {
        Ok(report)
    } else {
        out.sort_by_key(|v| crate::rules::RULES.iter().position(|r| r.id == v.rule));
        Err(out)
    }
}

/// A dynamic symbol with its name resolved.
struct DynSym {
    name: String,
    kind: SymKind,
    bind: u8,
    shndx: u16,
    value: u64,
    size: u64,
}

impl DynSym {
    fn symbol(&self) -> Symbol {
        Symbol {
            name: self.name.clone(),
            kind: self.kind,
            weak: self.bind == elf::STB_WEAK,
            value: self.value,
            size: self.size,
        }
    }
}

fn audit_into(data: &[u8], imports: &[(String, SymKind)], out: &mut Vec<Violation>) -> Report {
    let mut report = Report {
        file_size: data.len() as u64,
        functions_from: ".dynsym",
        ..Report::default()
    };
    let header = match elf::FileHeader64::<LE>::parse(data) {
        Ok(h) => h,
        Err(e) => {
            out.push(violation(
                ELF,
                format!("not a 64-bit little-endian ELF file: {e}"),
            ));
            return report;
        }
    };
    if header.endian().is_err() {
        out.push(violation(ELF, "not a little-endian ELF file"));
        return report;
    }
    let machine = header.e_machine(LE);
    if machine != elf::EM_X86_64 {
        out.push(violation(
            ELF,
            format!("e_machine is {machine}, not EM_X86_64 ({})", elf::EM_X86_64),
        ));
        return report;
    }
    let phdrs = match header.program_headers(LE, data) {
        Ok(p) => p,
        Err(e) => {
            out.push(violation(ELF, format!("bad program headers: {e}")));
            return report;
        }
    };
    report.segments = phdrs.iter().map(Segment::from).collect();
    let image = FileSpace {
        data,
        segments: report.segments.clone(),
    };

    check_segments(&image.segments, out);
    for (i, s) in image.segments.iter().enumerate() {
        if s.p_type == elf::PT_TLS {
            out.push(violation(
                TLS,
                format!(
                    "{}: Haiku's kernel has no thread-local storage for add-ons \
                     (no PT_TLS handling, no TLS relocations); drop the thread-local variables",
                    s.describe(i)
                ),
            ));
        }
    }

    // The dynamic section, read from PT_DYNAMIC as the loader does.
    let dynamic = phdrs
        .iter()
        .find(|p| p.p_type(LE) == elf::PT_DYNAMIC)
        .map(|p| p.dynamic(LE, data));
    let dynamic = match dynamic {
        None => {
            out.push(violation(
                DT_HASH,
                "no PT_DYNAMIC program header: Haiku's loader requires one to find the symbol \
                 table, the hash table and the relocations",
            ));
            None
        }
        Some(Err(e)) => {
            out.push(violation(ELF, format!("bad PT_DYNAMIC: {e}")));
            None
        }
        Some(Ok(None)) => None,
        Some(Ok(Some(entries))) => Some(Dynamic::from_records(entries)),
    };

    // Section headers are optional: they name code ranges and functions.
    let sections = header.sections(LE, data).ok();

    let mut syms = Vec::new();
    if let Some(dynamic) = &dynamic {
        check_dt_hash(dynamic, out);
        syms = dynamic_symbols(&image, dynamic, sections.as_ref(), out);
        report.needed = dynamic
            .all(elf::DT_NEEDED)
            .filter_map(|off| {
                let strtab = dynamic.get(elf::DT_STRTAB)?;
                image.string(strtab.checked_add(off)?)
            })
            .collect();
    }
    (report.functions, report.functions_from) = functions(data, sections.as_ref(), &syms);
    if let Some(dynamic) = &dynamic {
        let relative;
        (report.relocations, relative) = check_relocations(&image, dynamic, &syms, out);
        check_initializers(&image, dynamic, &relative, &report.functions, out);
    }
    check_imports(&syms, imports, out);
    check_modules(&syms, out);
    report.imports = syms
        .iter()
        .skip(1)
        .filter(|s| s.shndx == elf::SHN_UNDEF)
        .map(DynSym::symbol)
        .collect();
    report.exports = syms
        .iter()
        .skip(1)
        .filter(|s| s.shndx != elf::SHN_UNDEF && s.bind != elf::STB_LOCAL)
        .map(DynSym::symbol)
        .collect();

    let ranges = code_ranges(&image, data, sections.as_ref(), dynamic.as_ref(), &syms);
    report.code_from = ranges.from.clone();
    let mut scan = Scan::new(&report.functions);
    for (vaddr, bytes) in &ranges.ranges {
        report.code_bytes += bytes.len() as u64;
        scan.range(*vaddr, bytes, out);
    }
    report.instructions = scan.instructions;
    let unwind = unwind_functions(&image);
    report.frames = check_frames(
        &ranges.ranges,
        &report.functions,
        report.functions_from,
        unwind.as_deref(),
        out,
    );
    report
}

/// Defined functions sorted by address: `.symtab` when the file has one, else the defined
/// FUNCs of `.dynsym`.
fn functions(
    data: &[u8],
    sections: Option<&object::read::elf::SectionTable<'_, elf::FileHeader64<LE>>>,
    syms: &[DynSym],
) -> (Vec<Symbol>, &'static str) {
    let symtab = sections.and_then(|sections| {
        let table = sections.symbols(LE, data, elf::SHT_SYMTAB).ok()?;
        if table.is_empty() {
            return None;
        }
        let strings = table.strings();
        let funcs = table
            .iter()
            .filter(|s| s.st_type() == elf::STT_FUNC && !s.is_undefined(LE))
            .map(|s| Symbol {
                name: String::from_utf8_lossy(s.name(LE, strings).unwrap_or(b"?")).into_owned(),
                kind: SymKind::Func,
                weak: s.st_bind() == elf::STB_WEAK,
                value: s.st_value(LE),
                size: s.st_size(LE),
            })
            .collect::<Vec<_>>();
        Some(funcs)
    });
    let (mut functions, from) = match symtab {
        Some(f) => (f, ".symtab"),
        None => (
            syms.iter()
                .skip(1)
                .filter(|s| s.kind == SymKind::Func && s.shndx != elf::SHN_UNDEF)
                .map(DynSym::symbol)
                .collect(),
            ".dynsym",
        ),
    };
    functions.sort_by(|a, b| (a.value, &a.name).cmp(&(b.value, &b.name)));
    functions.dedup_by(|a, b| a.value == b.value && a.name == b.name);
    (functions, from)
}

fn check_segments(segments: &[Segment], out: &mut Vec<Violation>) {
    let mut text = None;
    let mut data = None;
    let mut length = 0u64;
    let mut reserved = 0u64;
    for (i, s) in segments.iter().enumerate().filter(|(_, s)| s.is_load()) {
        // Exactly load_kernel_add_on's arithmetic: the end counts from address 0.
        length += round_up(s.memsz + s.vaddr % PAGE);
        reserved = reserved.max(round_up(s.memsz.saturating_add(s.vaddr)));
        let what = s.describe(i);
        match (s.executable(), s.writable()) {
            (true, true) => out.push(violation(
                SEGMENTS,
                format!(
                    "{what} is writable and executable: the add-on's code would stay writable \
                     (link with -z noseparate-code -z norelro, not -N/--omagic)"
                ),
            )),
            (true, false) => {
                if let Some(first) = text.replace(i) {
                    out.push(violation(
                        SEGMENTS,
                        format!(
                            "{what} is a second executable PT_LOAD (the first is #{first}): \
                             Haiku maps only the first (\"we've already created this segment\")"
                        ),
                    ));
                }
            }
            (false, true) => {
                if let Some(first) = data.replace(i) {
                    out.push(violation(
                        SEGMENTS,
                        format!(
                            "{what} is a second writable PT_LOAD (the first is #{first}): Haiku \
                             silently skips it (\"we've already created this segment\"); \
                             link with -z norelro"
                        ),
                    ));
                }
            }
            (false, false) => out.push(violation(
                SEGMENTS,
                format!(
                    "{what} is never mapped by Haiku: weird program header flags (neither \
                     executable nor writable), so whatever it holds (.dynsym, .rodata, ...) \
                     would be missing; link with -z noseparate-code and --no-rosegment (lld)"
                ),
            )),
        }
    }
    if text.is_none() {
        out.push(violation(
            SEGMENTS,
            "no executable (R+X) PT_LOAD: Haiku needs exactly one text segment",
        ));
    }
    if data.is_none() {
        out.push(violation(
            SEGMENTS,
            "no writable (R+W, not X) PT_LOAD: Haiku needs exactly one data segment",
        ));
    }
    if reserved > length + 8 * 1024 {
        out.push(violation(
            SEGMENTS,
            format!(
                "the PT_LOADs span {reserved:#x} bytes from address 0 but their page-rounded \
                 sizes add up to only {length:#x}: Haiku refuses more than 8 KiB of gaps \
                 (B_BAD_DATA); link with -z max-page-size=0x1000"
            ),
        ));
    }
}

fn check_dt_hash(dynamic: &Dynamic, out: &mut Vec<Violation>) {
    if dynamic.get(elf::DT_HASH).is_none() {
        let gnu = if dynamic.get(elf::DT_GNU_HASH).is_some() {
            " (there is only DT_GNU_HASH, which Haiku ignores)"
        } else {
            ""
        };
        out.push(violation(
            DT_HASH,
            format!(
                "no DT_HASH in the dynamic section{gnu}: Haiku looks symbols up only through \
                 the SysV hash table and refuses the add-on; link with --hash-style=sysv"
            ),
        ));
    }
    for (tag, name) in [(elf::DT_SYMTAB, "DT_SYMTAB"), (elf::DT_STRTAB, "DT_STRTAB")] {
        if dynamic.get(tag).is_none() {
            out.push(violation(
                DT_HASH,
                format!("no {name} in the dynamic section: Haiku refuses the add-on"),
            ));
        }
    }
}

/// The dynamic symbol table; its length comes from DT_HASH's nchain as in the loader, else
/// from the `.dynsym` section header.
fn dynamic_symbols(
    image: &FileSpace<'_>,
    dynamic: &Dynamic,
    sections: Option<&object::read::elf::SectionTable<'_, elf::FileHeader64<LE>>>,
    out: &mut Vec<Violation>,
) -> Vec<DynSym> {
    let (Some(symtab), Some(strtab)) = (dynamic.get(elf::DT_SYMTAB), dynamic.get(elf::DT_STRTAB))
    else {
        return Vec::new();
    };
    let count = match dynamic.get(elf::DT_HASH) {
        Some(hash) => match hash_counts(image, hash) {
            Some((_, nchain)) => u64::from(nchain),
            None => {
                out.push(violation(
                    DT_HASH,
                    format!("DT_HASH {hash:#x} is not inside the file's PT_LOADs"),
                ));
                return Vec::new();
            }
        },
        None => sections
            .and_then(|s| {
                s.iter()
                    .find(|h| h.sh_type(LE) == elf::SHT_DYNSYM)
                    .map(|h| h.sh_size(LE) / SYM_SIZE)
            })
            .unwrap_or(0),
    };
    let Some(raw) = RawSym::read_table(image, symtab, count) else {
        out.push(violation(
            DT_HASH,
            format!("DT_SYMTAB {symtab:#x} ({count} symbols) is not inside the file's PT_LOADs"),
        ));
        return Vec::new();
    };
    raw.into_iter()
        .map(|s| DynSym {
            name: image
                .string(strtab + u64::from(s.name))
                .unwrap_or_else(|| "<bad name>".into()),
            kind: s.kind,
            bind: s.bind,
            shndx: s.shndx,
            value: s.value,
            size: s.size,
        })
        .collect()
}

fn check_relocations(
    image: &FileSpace<'_>,
    dynamic: &Dynamic,
    syms: &[DynSym],
    out: &mut Vec<Violation>,
) -> (BTreeMap<u32, usize>, BTreeMap<u64, u64>) {
    let mut counts = BTreeMap::new();
    let mut relative = BTreeMap::new();
    if let Some(rel) = dynamic.get(elf::DT_REL) {
        let size = dynamic.get(elf::DT_RELSZ).unwrap_or(0);
        out.push(violation(
            RELOCATIONS,
            format!(
                "DT_REL at {rel:#x} ({size} bytes): Haiku supports only RELA relocations on \
                 x86_64 (\"not supported on x86_64\") and refuses the add-on"
            ),
        ));
    }
    if dynamic.get(elf::DT_JMPREL).is_some() {
        match dynamic.get(elf::DT_PLTREL) {
            Some(t) if t == u64::from(elf::DT_RELA) => {}
            t => out.push(violation(
                RELOCATIONS,
                format!(
                    "DT_PLTREL is {}, not DT_RELA: Haiku reads the PLT relocations as RELA",
                    t.map_or("missing".into(), |t| t.to_string())
                ),
            )),
        }
    }
    if let Some(relr) = dynamic.get(crate::elf::DT_RELR) {
        let size = dynamic.get(crate::elf::DT_RELRSZ).unwrap_or(0);
        out.push(violation(
            RELOCATIONS,
            format!(
                "DT_RELR at {relr:#x} ({size} bytes of packed relative relocations): Haiku does \
                 not parse DT_RELR, so these relocations would silently not be applied; do not \
                 link with -z pack-relative-relocs"
            ),
        ));
    } else if dynamic.get(crate::elf::DT_RELRSZ).is_some() {
        out.push(violation(
            RELOCATIONS,
            "DT_RELRSZ without DT_RELR: packed relative relocations, which Haiku does not parse",
        ));
    }
    let tables = [
        ("DT_RELA", elf::DT_RELA, elf::DT_RELASZ),
        ("DT_JMPREL", elf::DT_JMPREL, elf::DT_PLTRELSZ),
    ];
    for (name, addr_tag, size_tag) in tables {
        let Some(addr) = dynamic.get(addr_tag) else {
            continue;
        };
        let size = dynamic.get(size_tag).unwrap_or(0);
        let Some(relas) = Rela::read_table(image, addr, size) else {
            out.push(violation(
                RELOCATIONS,
                format!("{name} at {addr:#x} ({size} bytes) is not inside the file's PT_LOADs"),
            ));
            continue;
        };
        for r in relas {
            let t = r.r_type;
            *counts.entry(t).or_insert(0) += 1;
            let offset = r.offset;
            if t == elf::R_X86_64_RELATIVE {
                relative.insert(offset, r.addend as u64);
            }
            let index = r.sym as usize;
            let sym = if index == 0 {
                String::new()
            } else {
                match syms.get(index) {
                    Some(s) => format!(" against `{}`", s.name),
                    None => {
                        out.push(violation(
                            RELOCATIONS,
                            format!(
                                "{} at offset {offset:#x} names symbol #{index}, beyond the \
                                 {} dynamic symbols",
                                reloc_name(t),
                                syms.len()
                            ),
                        ));
                        String::new()
                    }
                }
            };
            let what = format!("{} ({t}) at offset {offset:#x}{sym}", reloc_name(t));
            let why = reloc(t).refused;
            if let Some(why) = why {
                out.push(violation(RELOCATIONS, format!("{what}: {why}")));
            } else if t != elf::R_X86_64_NONE && !image.in_mapped_region(offset) {
                out.push(violation(
                    RELOCATIONS,
                    format!(
                        "{what} lies outside the text and data regions Haiku maps \
                         (B_BAD_ADDRESS)"
                    ),
                ));
            }
        }
    }
    (counts, relative)
}

fn check_initializers(
    image: &FileSpace<'_>,
    dynamic: &Dynamic,
    relative: &BTreeMap<u64, u64>,
    functions: &[Symbol],
    out: &mut Vec<Violation>,
) {
    let name_at = |addr: u64| {
        functions
            .iter()
            .find(|s| s.value == addr)
            .map_or(String::new(), |s| format!(" (`{}`)", s.name))
    };
    for (tag, name) in [(elf::DT_INIT, "DT_INIT"), (elf::DT_FINI, "DT_FINI")] {
        if let Some(addr) = dynamic.get(tag) {
            out.push(violation(
                INITIALIZERS,
                format!(
                    "{name} at {addr:#x}{}: Haiku never runs initializers or finalizers of \
                     kernel add-ons, so this code would silently not run",
                    name_at(addr)
                ),
            ));
        }
    }
    let arrays = [
        (
            "DT_PREINIT_ARRAY",
            elf::DT_PREINIT_ARRAY,
            elf::DT_PREINIT_ARRAYSZ,
        ),
        ("DT_INIT_ARRAY", elf::DT_INIT_ARRAY, elf::DT_INIT_ARRAYSZ),
        ("DT_FINI_ARRAY", elf::DT_FINI_ARRAY, elf::DT_FINI_ARRAYSZ),
    ];
    for (name, tag, size_tag) in arrays {
        let Some(addr) = dynamic.get(tag) else {
            continue;
        };
        let size = dynamic.get(size_tag).unwrap_or(0);
        if size == 0 {
            continue;
        }
        // The entries are RELATIVE-relocated: the addend is the function.
        let entries: Vec<String> = image
            .bytes(addr, size)
            .map(|b| {
                (addr..)
                    .step_by(8)
                    .zip(b.chunks_exact(8))
                    .map(|(at, c)| {
                        let in_file = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                        let v = relative.get(&at).copied().unwrap_or(in_file);
                        format!("{v:#x}{}", name_at(v))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(violation(
            INITIALIZERS,
            format!(
                "{name} at {addr:#x} has {} entr{} [{}]: Haiku never runs initializers or \
                 finalizers of kernel add-ons, so they would silently not run",
                size / 8,
                if size / 8 == 1 { "y" } else { "ies" },
                entries.join(", ")
            ),
        ));
    }
}

fn check_imports(syms: &[DynSym], imports: &[(String, SymKind)], out: &mut Vec<Violation>) {
    for s in syms.iter().skip(1).filter(|s| s.shndx == elf::SHN_UNDEF) {
        let weak = if s.bind == elf::STB_WEAK { "weak " } else { "" };
        let table = imports.iter().find(|(n, _)| *n == s.name).map(|(_, t)| *t);
        let message = match (s.kind, table) {
            (SymKind::NoType, _) => format!(
                "`{}` is an undefined {weak}NOTYPE symbol: it links without the kernel stub \
                 (link against the generated kernel_x86_64 stub so it gets the kernel's \
                 FUNC/OBJECT type; Haiku refuses a type mismatch)",
                s.name
            ),
            (_, None) => match only_in(&s.name) {
                Some(release) => format!(
                    "`{}` ({weak}{}) is imported but only Haiku {}'s kernel exports it \
                     (`only_in` in spec/haiku_driver.toml): the other release would fail to \
                     resolve it (B_MISSING_SYMBOL)",
                    s.name,
                    s.kind,
                    release.name()
                ),
                None => format!(
                    "`{}` ({weak}{}) is imported but is not in the kernel import table \
                     (spec/haiku_driver.toml): Haiku would fail to resolve it \
                     (B_MISSING_SYMBOL)",
                    s.name, s.kind
                ),
            },
            (kind, Some(expected)) => {
                if kind == expected {
                    continue;
                }
                format!(
                    "`{}` is imported as {weak}{kind} but the kernel exports it as {expected}: \
                     Haiku refuses the type mismatch (\"wrong type\", B_MISSING_SYMBOL)",
                    s.name,
                )
            }
        };
        out.push(violation(IMPORTS, message));
    }
}

/// The one release whose kernel exports `name`, if the import table says only one does.
fn only_in(name: &str) -> Option<spec::kernel_import::HaikuRelease> {
    spec::haiku_driver::KERNEL_IMPORTS
        .iter()
        .find(|i| i.name == name)
        .and_then(|i| i.only_in)
}

fn check_modules(syms: &[DynSym], out: &mut Vec<Violation>) {
    let found: Vec<&DynSym> = syms.iter().filter(|s| s.name == "modules").collect();
    let good = found.iter().any(|s| {
        s.shndx != elf::SHN_UNDEF
            && (s.bind == elf::STB_GLOBAL || s.bind == elf::STB_WEAK)
            && s.kind == SymKind::Object
    });
    if good {
        return;
    }
    let message = match found.first() {
        None => "no dynamic symbol `modules`: Haiku finds the add-on's module_info table \
                 through it and refuses the add-on without it (B_BAD_TYPE)"
            .to_string(),
        Some(s) if s.shndx == elf::SHN_UNDEF => {
            "`modules` is undefined: the add-on must define its NULL-terminated module_info \
             pointer array"
                .to_string()
        }
        Some(s) if s.bind == elf::STB_LOCAL => {
            "`modules` is a local symbol: it must be global (#[no_mangle] pub static)".to_string()
        }
        Some(s) => format!(
            "`modules` is {}, not OBJECT: it must be the NULL-terminated module_info pointer \
             array",
            s.kind
        ),
    };
    out.push(violation(MODULES, message));
}

struct CodeRanges<'a> {
    ranges: Vec<(u64, &'a [u8])>,
    from: String,
}

/// The executable bytes: the code sections of the executable segment, or, without section
/// headers, the whole executable PT_LOAD less the ELF headers and the tables the dynamic
/// section points at.
fn code_ranges<'a>(
    image: &FileSpace<'a>,
    data: &'a [u8],
    sections: Option<&object::read::elf::SectionTable<'a, elf::FileHeader64<LE>>>,
    dynamic: Option<&Dynamic>,
    syms: &[DynSym],
) -> CodeRanges<'a> {
    let exec: Vec<&Segment> = image
        .segments
        .iter()
        .filter(|s| s.is_load() && s.executable())
        .collect();
    let in_exec = |addr: u64| exec.iter().any(|s| s.file_offset(addr, 1).is_some());
    if let Some(sections) = sections.filter(|s| !s.is_empty()) {
        let mut ranges = Vec::new();
        let mut names = Vec::new();
        for h in sections.iter() {
            let flags = h.sh_flags(LE);
            let wanted = u64::from(elf::SHF_ALLOC | elf::SHF_EXECINSTR);
            if h.sh_type(LE) != elf::SHT_PROGBITS || flags & wanted != wanted {
                continue;
            }
            let addr = h.sh_addr(LE);
            if h.sh_size(LE) == 0 || !in_exec(addr) {
                continue;
            }
            if let Ok(bytes) = h.data(LE, data) {
                ranges.push((addr, bytes));
                let name = sections.section_name(LE, h).unwrap_or(b"?");
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        return CodeRanges {
            ranges,
            from: format!("sections {}", names.join(" ")),
        };
    }
    // No section headers: skip what the program and dynamic headers say is not code.
    let mut skip: Vec<(u64, u64)> = Vec::new();
    if let Some(d) = dynamic {
        let strsz = d.get(elf::DT_STRSZ).unwrap_or(0);
        let sized = [
            (elf::DT_STRTAB, strsz),
            (elf::DT_SYMTAB, syms.len() as u64 * 24),
            (elf::DT_RELA, d.get(elf::DT_RELASZ).unwrap_or(0)),
            (elf::DT_JMPREL, d.get(elf::DT_PLTRELSZ).unwrap_or(0)),
            (elf::DT_VERSYM, syms.len() as u64 * 2),
        ];
        for (tag, len) in sized {
            if let Some(a) = d.get(tag) {
                skip.push((a, a + len));
            }
        }
        if let Some(h) = d.get(elf::DT_HASH) {
            if let Some((nbucket, nchain)) = hash_counts(image, h) {
                let (nbucket, nchain) = (u64::from(nbucket), u64::from(nchain));
                skip.push((h, h + 8 + 4 * (nbucket + nchain)));
            }
        }
    }
    for s in &image.segments {
        if !s.is_load() && s.p_type != elf::PT_GNU_STACK {
            skip.push((s.vaddr, s.vaddr + s.filesz));
        }
    }
    let mut ranges = Vec::new();
    for s in exec {
        // The ELF header and program headers, when this segment maps them.
        let mut start = s.vaddr;
        if s.offset == 0 {
            let phend = 64 + image.segments.len() as u64 * 56;
            start = s.vaddr + phend;
        }
        let end = s.vaddr + s.filesz;
        let mut cuts: Vec<(u64, u64)> = skip
            .iter()
            .copied()
            .filter(|(a, b)| *a < end && *b > start)
            .collect();
        cuts.sort_unstable();
        let mut at = start;
        for (a, b) in cuts.into_iter().chain([(end, end)]) {
            if a > at {
                if let Some(bytes) = image.file_bytes(at, a - at) {
                    ranges.push((at, bytes));
                }
            }
            at = at.max(b);
        }
    }
    CodeRanges {
        ranges,
        from: "executable PT_LOAD, no section headers".into(),
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures are built here, in a temporary directory, with the system C compiler and
    //! linker: a stub `kernel_x86_64` and add-ons linked the way the real one is, each
    //! breaking one rule.

    use super::*;
    use object::read::elf::Rela as _;
    use object::ReadRef as _;
    use std::process::Command;

    /// The add-on's code generation (no red zone, frame pointers) and link for gcc and GNU
    /// ld ([`crate::build::c_addon`]), optimised as the C compiler usually is.
    fn addon_flags() -> Vec<&'static str> {
        let mut v = crate::build::c_addon();
        v.push("-O2");
        v
    }

    /// The kernel: a function, a variadic function, a data object, and one function the
    /// import table does not list.
    const STUB: &str = r#"
        int create_sem(int count, const char *name) { return count + (name != 0); }
        void dprintf(const char *format, ...) { (void)format; }
        unsigned long __stack_chk_guard = 0x1234;
        void not_a_kernel_function(void) {}
    "#;

    /// A well-formed add-on: `modules`, a call through the PLT, a variadic call, and a
    /// kernel data object read through the GOT.
    const GOOD: &str = r#"
        extern int create_sem(int, const char *);
        extern void dprintf(const char *, ...);
        extern unsigned long __stack_chk_guard;
        struct module_info { const char *name; unsigned flags; long (*std_ops)(int, ...); };
        static long std_ops(int op, ...) {
            dprintf("fixture: op %d\n", op);
            return create_sem(1, "fixture") + (long)__stack_chk_guard;
        }
        static struct module_info driver = { "drivers/audio/hmulti/fixture/driver_v1", 0, std_ops };
        struct module_info *modules[] = { &driver, 0 };
    "#;

    fn table() -> Vec<(String, SymKind)> {
        [
            ("create_sem", SymKind::Func),
            ("dprintf", SymKind::Func),
            ("__stack_chk_guard", SymKind::Object),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect()
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Self(tempfile::tempdir().unwrap())
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.path().join(name)
        }

        fn cc(&self, args: &[&str]) {
            let out = Command::new("cc")
                .current_dir(self.0.path())
                .args(args)
                .output()
                .expect("the C compiler `cc` runs");
            assert!(
                out.status.success(),
                "cc {}\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// `<sub>/libkernel_x86_64.so` from `source`; returns `-L<sub>`.
        fn stub(&self, sub: &str, source: &str) -> String {
            std::fs::create_dir_all(self.path(sub)).unwrap();
            let c = format!("{sub}/kernel.c");
            std::fs::write(self.path(&c), source).unwrap();
            let so = format!("{sub}/libkernel_x86_64.so");
            let mut args = crate::build::KERNEL_STUB.to_vec();
            args.extend(["-O2", "-o", &so, &c]);
            self.cc(&args);
            format!("-L{}", self.path(sub).display())
        }

        /// An add-on from `source` with [`addon_flags`] + `extra` (later flags win), linked
        /// against the stub in `-L` dir `lib` when given.
        fn addon(&self, name: &str, source: &str, extra: &[&str], lib: Option<&str>) -> PathBuf {
            let c = format!("{name}.c");
            let so = format!("{name}.so");
            std::fs::write(self.path(&c), source).unwrap();
            let mut args = addon_flags();
            args.extend_from_slice(extra);
            args.extend_from_slice(&["-o", &so, &c]);
            if let Some(lib) = lib {
                args.extend_from_slice(&[lib, "-lkernel_x86_64"]);
            }
            self.cc(&args);
            self.path(&so)
        }

        /// [`GOOD`] with `extra` flags, linked against [`STUB`].
        fn good(&self, name: &str, extra: &[&str]) -> PathBuf {
            let lib = self.stub("kernel", STUB);
            self.addon(name, GOOD, extra, Some(&lib))
        }
    }

    fn pass(path: &Path) -> Report {
        match audit(path, &table()) {
            Ok(r) => r,
            Err(v) => panic!("{} was refused:\n{}", path.display(), list(&v)),
        }
    }

    fn list(v: &[Violation]) -> String {
        v.iter().map(|v| format!("  {v}\n")).collect()
    }

    /// The audit refuses `data`, and every violation belongs to one of `rules`, and each
    /// of `rules` is broken at least once.
    fn refuse_bytes(data: &[u8], rules: &[&str]) -> Vec<Violation> {
        let v = match audit_bytes(data, &table()) {
            Ok(r) => panic!("accepted, expected {rules:?}:\n{r}"),
            Err(v) => v,
        };
        for rule in rules {
            assert!(
                v.iter().any(|v| v.rule == *rule),
                "no `{rule}` violation:\n{}",
                list(&v)
            );
        }
        assert!(
            v.iter().all(|v| rules.contains(&v.rule)),
            "violations beyond {rules:?}:\n{}",
            list(&v)
        );
        v
    }

    fn refuse(path: &Path, rules: &[&str]) -> Vec<Violation> {
        refuse_bytes(&std::fs::read(path).unwrap(), rules)
    }

    /// Exactly one violation of `rule` contains every one of `needles`.
    fn has(v: &[Violation], rule: &str, needles: &[&str]) {
        let hits = v
            .iter()
            .filter(|v| v.rule == rule && needles.iter().all(|n| v.message.contains(n)))
            .count();
        assert!(
            hits >= 1,
            "no `{rule}` violation mentions {needles:?}:\n{}",
            list(v)
        );
    }

    /// The address of a symbol of the fixture's `.symtab`.
    fn symbol_address(path: &Path, name: &str) -> u64 {
        let data = std::fs::read(path).unwrap();
        let header = elf::FileHeader64::<LE>::parse(&*data).unwrap();
        let sections = header.sections(LE, &*data).unwrap();
        let table = sections.symbols(LE, &*data, elf::SHT_SYMTAB).unwrap();
        table
            .iter()
            .find(|s| s.name(LE, table.strings()).ok() == Some(name.as_bytes()))
            .map(|s| s.st_value(LE))
            .unwrap_or_else(|| panic!("no symbol {name}"))
    }

    #[test]
    fn a_good_add_on_passes_and_is_reported() {
        let dir = Dir::new();
        let so = dir.good("good", &[]);
        let r = pass(&so);
        assert_eq!(r.file_size, std::fs::metadata(&so).unwrap().len());
        let loads: Vec<_> = r.segments.iter().filter(|s| s.is_load()).collect();
        assert_eq!(loads.len(), 2, "{r}");
        assert_eq!(loads[0].flags, elf::PF_R | elf::PF_X);
        assert_eq!(loads[1].flags, elf::PF_R | elf::PF_W);
        assert_eq!(r.needed, ["kernel_x86_64"]);
        let mut imports: Vec<String> = r.imports.iter().map(ToString::to_string).collect();
        imports.sort();
        assert_eq!(
            imports,
            [
                "__stack_chk_guard OBJECT",
                "create_sem FUNC",
                "dprintf FUNC"
            ]
        );
        let exports: Vec<String> = r.exports.iter().map(ToString::to_string).collect();
        assert_eq!(exports, ["modules OBJECT"]);
        assert_eq!(r.relocations.get(&elf::R_X86_64_JUMP_SLOT), Some(&2), "{r}");
        assert_eq!(r.relocations.get(&elf::R_X86_64_GLOB_DAT), Some(&1), "{r}");
        assert!(
            r.relocations.get(&elf::R_X86_64_RELATIVE) >= Some(&2),
            "{r}"
        );
        assert_eq!(r.functions_from, ".symtab");
        assert!(r.functions.iter().any(|f| f.name == "std_ops"), "{r}");
        assert_eq!(r.functions_containing(&["std_"]), ["std_ops"]);
        assert!(r.code_from.contains(".text"), "{r}");
        assert!(r.instructions > 5, "{r}");
        let text = r.to_string();
        for needle in [
            "LOAD",
            "R E",
            "RW ",
            "R_X86_64_JUMP_SLOT",
            "create_sem FUNC",
            "modules OBJECT",
            "std_ops",
        ] {
            assert!(text.contains(needle), "{needle} not in\n{text}");
        }
    }

    #[test]
    fn a_stripped_add_on_passes_with_dynsym_only() {
        let dir = Dir::new();
        let so = dir.good("stripped", &["-s"]);
        let r = pass(&so);
        assert_eq!(r.functions_from, ".dynsym");
        assert!(r.functions.is_empty(), "{r}");
        assert_eq!(r.exports.len(), 1);
    }

    #[test]
    fn without_section_headers_the_executable_segment_is_decoded() {
        let dir = Dir::new();
        let so = dir.good("good", &[]);
        let mut data = std::fs::read(&so).unwrap();
        // e_shoff (0x28, 8 bytes), e_shnum (0x3c) and e_shstrndx (0x3e) := 0
        data[0x28..0x30].fill(0);
        data[0x3c..0x40].fill(0);
        let r = audit_bytes(&data, &table()).unwrap_or_else(|v| panic!("{}", list(&v)));
        assert!(r.code_from.contains("no section headers"), "{r}");
        assert!(r.code_bytes > 0);
        assert_eq!(r.functions_from, ".dynsym");
        // The same functions through PT_GNU_EH_FRAME, each ending where its FDE says
        // rather than in the data that follows the code.
        let full = pass(&so);
        let leaves = |r: &Report| r.frames.leaves.iter().map(|l| l.0).collect::<Vec<_>>();
        assert_eq!(r.frames.functions, full.frames.functions, "{r}");
        assert_eq!(r.frames.framed, full.frames.framed, "{r}");
        assert_eq!(leaves(&r), leaves(&full), "{r}");
    }

    #[test]
    fn gnu_hash_only_breaks_dt_hash() {
        let dir = Dir::new();
        let so = dir.good("gnu", &["-Wl,--hash-style=gnu"]);
        let v = refuse(&so, &[DT_HASH]);
        has(&v, DT_HASH, &["no DT_HASH", "DT_GNU_HASH"]);
    }

    #[test]
    fn a_read_only_segment_breaks_segments() {
        let dir = Dir::new();
        let so = dir.good("separate", &["-Wl,-z,separate-code"]);
        let v = refuse(&so, &[SEGMENTS]);
        has(
            &v,
            SEGMENTS,
            &[
                "LOAD #0",
                "never mapped by Haiku: weird program header flags",
            ],
        );
    }

    /// Rewrites program header `index` of `data`: type, flags, vaddr and memsz.
    fn patch_phdr(data: &mut [u8], index: usize, p_type: u32, flags: u32, vaddr: u64, memsz: u64) {
        let phoff = u64::from_le_bytes(data[0x20..0x28].try_into().unwrap()) as usize;
        let ph = &mut data[phoff + index * 56..][..56];
        ph[0..4].copy_from_slice(&p_type.to_le_bytes());
        ph[4..8].copy_from_slice(&flags.to_le_bytes());
        ph[16..24].copy_from_slice(&vaddr.to_le_bytes());
        ph[24..32].copy_from_slice(&vaddr.to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
    }

    #[test]
    fn extra_or_writable_text_segments_break_segments() {
        // GNU ld never gives a shared object two RW PT_LOADs with -z noseparate-code (its
        // RELRO shares the RW segment), so turn PT_GNU_STACK into the extra PT_LOAD.
        let dir = Dir::new();
        let so = dir.good("good", &[]);
        let data = std::fs::read(&so).unwrap();
        let r = pass(&so);
        let stack = r
            .segments
            .iter()
            .position(|s| s.p_type == elf::PT_GNU_STACK)
            .unwrap();
        let (text, rw) = (0, 1);
        assert!(r.segments[text].executable() && r.segments[rw].writable());

        let mut d = data.clone();
        patch_phdr(
            &mut d,
            stack,
            elf::PT_LOAD,
            elf::PF_R | elf::PF_W,
            0x1000,
            0x10,
        );
        let v = refuse_bytes(&d, &[SEGMENTS]);
        has(
            &v,
            SEGMENTS,
            &[
                &format!("LOAD #{stack}"),
                "second writable PT_LOAD (the first is #1)",
            ],
        );

        let mut d = data.clone();
        patch_phdr(
            &mut d,
            stack,
            elf::PT_LOAD,
            elf::PF_R | elf::PF_X,
            0x1000,
            0x10,
        );
        let v = refuse_bytes(&d, &[SEGMENTS]);
        has(
            &v,
            SEGMENTS,
            &["second executable PT_LOAD (the first is #0)"],
        );

        // The span rule: a segment far away leaves more than 8 KiB unmapped in between.
        let mut d = data.clone();
        patch_phdr(
            &mut d,
            stack,
            elf::PT_LOAD,
            elf::PF_R | elf::PF_W,
            0x10000,
            0x10,
        );
        let v = refuse_bytes(&d, &[SEGMENTS]);
        has(&v, SEGMENTS, &["span 0x11000 bytes", "8 KiB"]);

        // R+W+X text, as -N/--omagic would give.
        let mut d = data.clone();
        let s = &r.segments[text];
        patch_phdr(
            &mut d,
            text,
            elf::PT_LOAD,
            elf::PF_R | elf::PF_W | elf::PF_X,
            s.vaddr,
            s.memsz,
        );
        let v = refuse_bytes(&d, &[SEGMENTS]);
        has(&v, SEGMENTS, &["LOAD #0 (RWE", "writable and executable"]);
    }

    #[test]
    fn a_tls_variable_breaks_tls_and_relocations() {
        let dir = Dir::new();
        let src = "__thread int counter;\n\
                   int bump(void) { return ++counter; }\n\
                   void *modules[] = { 0 };\n";
        // Initial-exec: a TPOFF64 relocation and no __tls_get_addr import.
        let so = dir.addon("tls", src, &["-ftls-model=initial-exec"], None);
        let v = refuse(&so, &[TLS, RELOCATIONS]);
        has(&v, TLS, &["TLS #", "thread-local"]);
        has(
            &v,
            RELOCATIONS,
            &["R_X86_64_TPOFF64 (18) at offset 0x", "`counter`"],
        );
        // General-dynamic: DTPMOD64/DTPOFF64, and __tls_get_addr links untyped.
        let so = dir.addon("tls_gd", src, &[], None);
        let v = refuse(&so, &[TLS, RELOCATIONS, IMPORTS]);
        has(&v, RELOCATIONS, &["R_X86_64_DTPMOD64 (16)", "`counter`"]);
        has(&v, RELOCATIONS, &["R_X86_64_DTPOFF64 (17)", "`counter`"]);
        has(&v, IMPORTS, &["`__tls_get_addr`", "NOTYPE"]);
    }

    #[test]
    fn packed_relative_relocations_break_relocations() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!(
            "{GOOD}\nstatic int a, b, c, d, e, f, g, h;\n\
             int *table[] = {{ &a, &b, &c, &d, &e, &f, &g, &h }};\n"
        );
        let so = dir.addon("relr", &src, &["-Wl,-z,pack-relative-relocs"], Some(&lib));
        let v = refuse(&so, &[RELOCATIONS]);
        has(&v, RELOCATIONS, &["DT_RELR at 0x", "pack-relative-relocs"]);
    }

    #[test]
    fn a_dynamic_pc32_breaks_relocations() {
        // GNU ld refuses to emit a dynamic PC32 into a shared object, so patch the type of
        // the first .rela.dyn entry of a good fixture to R_X86_64_PC32.
        let dir = Dir::new();
        let so = dir.good("pc32", &[]);
        let mut data = std::fs::read(&so).unwrap();
        let (rela_off, r_offset) = {
            let header = elf::FileHeader64::<LE>::parse(&*data).unwrap();
            let sections = header.sections(LE, &*data).unwrap();
            let (_, rela) = sections.section_by_name(LE, b".rela.dyn").unwrap();
            let off = rela.sh_offset(LE);
            let entry = data.read_at::<elf::Rela64<LE>>(off).unwrap();
            (off as usize, entry.r_offset(LE))
        };
        // r_info is at +8: the type is its low 32 bits.
        data[rela_off + 8..rela_off + 12].copy_from_slice(&elf::R_X86_64_PC32.to_le_bytes());
        let v = refuse_bytes(&data, &[RELOCATIONS]);
        has(
            &v,
            RELOCATIONS,
            &[
                &format!("R_X86_64_PC32 (2) at offset {r_offset:#x}"),
                "S+A-offset",
            ],
        );
    }

    #[test]
    fn an_import_missing_from_the_table_breaks_imports() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!(
            "{GOOD}\nextern void not_a_kernel_function(void);\n\
             void hook(void) {{ not_a_kernel_function(); }}\n"
        );
        let so = dir.addon("missing", &src, &[], Some(&lib));
        let v = refuse(&so, &[IMPORTS]);
        assert_eq!(v.len(), 1, "{}", list(&v));
        has(
            &v,
            IMPORTS,
            &["`not_a_kernel_function`", "not in the kernel import table"],
        );
    }

    /// `ffsl` is in the table but only nightly's kernel exports it (`only_in`): the add-on
    /// must load on R1/beta5 too, so the audit refuses it and says which release has it.
    #[test]
    fn an_import_only_one_release_exports_breaks_imports() {
        let dir = Dir::new();
        let lib = dir.stub(
            "kernel_ffsl",
            &format!("{STUB}\nint ffsl(long v) {{ return v != 0; }}\n"),
        );
        let src =
            format!("{GOOD}\nextern int ffsl(long);\nint low(long v) {{ return ffsl(v); }}\n");
        let so = dir.addon("nightly_only", &src, &["-fno-builtin"], Some(&lib));
        let v = refuse(&so, &[IMPORTS]);
        assert_eq!(v.len(), 1, "{}", list(&v));
        has(
            &v,
            IMPORTS,
            &[
                "`ffsl`",
                "only Haiku nightly's kernel exports it",
                "B_MISSING_SYMBOL",
            ],
        );
        // The table the audit of the add-on uses leaves it out.
        let both = kernel_imports();
        assert!(both.iter().any(|(n, _)| n == "create_sem"));
        assert!(!both.iter().any(|(n, _)| n == "ffsl"));
    }

    #[test]
    fn an_import_of_the_wrong_type_breaks_imports() {
        let dir = Dir::new();
        let lib = dir.stub("data_kernel", "int create_sem = 3;\n");
        let src = "extern int create_sem;\n\
                   int get(void) { return create_sem; }\n\
                   void *modules[] = { 0 };\n";
        let so = dir.addon("wrong_type", src, &[], Some(&lib));
        let v = refuse(&so, &[IMPORTS]);
        assert_eq!(v.len(), 1, "{}", list(&v));
        has(
            &v,
            IMPORTS,
            &["`create_sem`", "imported as OBJECT", "exports it as FUNC"],
        );
    }

    #[test]
    fn linking_without_the_stub_leaves_notype_imports() {
        let dir = Dir::new();
        let so = dir.addon("no_stub", GOOD, &[], None);
        let v = refuse(&so, &[IMPORTS]);
        for name in ["`create_sem`", "`dprintf`", "`__stack_chk_guard`"] {
            has(
                &v,
                IMPORTS,
                &[name, "NOTYPE", "links without the kernel stub"],
            );
        }
    }

    #[test]
    fn a_weak_undefined_import_is_checked_too() {
        let dir = Dir::new();
        let src = format!(
            "{GOOD}\nextern void optional_hook(void) __attribute__((weak));\n\
             void hook(void) {{ if (optional_hook) optional_hook(); }}\n"
        );
        let lib = dir.stub("kernel", STUB);
        let so = dir.addon("weak", &src, &[], Some(&lib));
        let v = refuse(&so, &[IMPORTS]);
        has(&v, IMPORTS, &["`optional_hook`", "weak NOTYPE"]);
    }

    #[test]
    fn no_modules_breaks_modules() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = GOOD.replace(
            "struct module_info *modules[]",
            "struct module_info *other[]",
        );
        let so = dir.addon("no_modules", &src, &[], Some(&lib));
        let v = refuse(&so, &[MODULES]);
        has(&v, MODULES, &["no dynamic symbol `modules`"]);
        // A function called `modules` is not the table.
        let src = format!("{src}\nvoid modules(void) {{}}\n");
        let so = dir.addon("func_modules", &src, &[], Some(&lib));
        let v = refuse(&so, &[MODULES]);
        has(&v, MODULES, &["`modules` is FUNC, not OBJECT"]);
    }

    #[test]
    fn a_store_below_rsp_breaks_red_zone() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!(
            "{GOOD}\n__asm__(\".globl poke\\n.type poke,@function\\npoke:\\n\
             movq $1, -8(%rsp)\\nret\\n.size poke, .-poke\\n\");\n"
        );
        let so = dir.addon("poke", &src, &[], Some(&lib));
        let poke = symbol_address(&so, "poke");
        let v = refuse(&so, &[RED_ZONE]);
        assert_eq!(v.len(), 1, "{}", list(&v));
        has(
            &v,
            RED_ZONE,
            &[
                &format!("{poke:#x} in `poke`"),
                "[rsp-8]",
                "writes 8 bytes below rsp",
            ],
        );
    }

    #[test]
    fn a_red_zone_leaf_function_breaks_red_zone() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!(
            "{GOOD}\nint leaf(int i) {{\n\
             volatile int a[8];\n\
             for (int j = 0; j < 8; j++) a[j] = j;\n\
             return a[i & 7];\n}}\n"
        );
        // A leaf without a frame pointer, so that the red zone shows as [rsp - n].
        let so = dir.addon(
            "leaf",
            &src,
            &["-mred-zone", "-momit-leaf-frame-pointer"],
            Some(&lib),
        );
        let leaf = symbol_address(&so, "leaf");
        let v = refuse(&so, &[RED_ZONE]);
        has(&v, RED_ZONE, &["in `leaf`", "below rsp", "rsp-"]);
        for x in &v {
            let addr = x.message.split(' ').next().unwrap();
            let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
            assert!((leaf..leaf + 0x100).contains(&addr), "{x}");
        }
        // The same function without the red zone.
        let so = dir.addon("leaf_ok", &src, &[], Some(&lib));
        pass(&so);
    }

    #[test]
    fn a_red_zone_frame_pointer_function_breaks_red_zone() {
        // gcc -O0 addresses a leaf function's locals through rbp without moving rsp.
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!("{GOOD}\nint leaf(int x) {{ int a = x * 2; return a + 1; }}\n");
        let so = dir.addon("leaf_o0", &src, &["-O0", "-mred-zone"], Some(&lib));
        let v = refuse(&so, &[RED_ZONE]);
        has(&v, RED_ZONE, &["in `leaf`", "[rbp-", "(rbp is rsp+0 here)"]);
        // With -mno-red-zone the frame is allocated first: no violation.
        let so = dir.addon("leaf_o0_ok", &src, &["-O0"], Some(&lib));
        pass(&so);
    }

    #[test]
    fn a_frameless_leaf_passes_and_is_listed() {
        // gcc leaves a leaf that needs no stack without a frame even with
        // -fno-omit-frame-pointer; -momit-leaf-frame-pointer makes sure of it.
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!("{GOOD}\nint triple(int x) {{ return x * 3 + 1; }}\n");
        let so = dir.addon("leaf_fp", &src, &["-momit-leaf-frame-pointer"], Some(&lib));
        let r = pass(&so);
        let triple = symbol_address(&so, "triple");
        assert!(
            r.frames.leaves.contains(&(triple, "triple".to_string())),
            "{r}"
        );
        assert!(
            r.frames.framed >= 1,
            "std_ops calls, so it has a frame:\n{r}"
        );
        assert_eq!(r.frames.broken, 0, "{r}");
        assert_eq!(r.frames.from, ".symtab and PT_GNU_EH_FRAME");
        let text = r.to_string();
        assert!(
            text.contains("frameless leaves (no call, rbp untouched):"),
            "{text}"
        );
        assert!(text.contains(&format!("{triple:#08x} triple")), "{text}");
    }

    #[test]
    fn calling_without_a_frame_breaks_frame_pointer() {
        // std_ops calls dprintf and create_sem.
        let dir = Dir::new();
        let so = dir.good("nofp", &["-fomit-frame-pointer"]);
        let std_ops = symbol_address(&so, "std_ops");
        let v = refuse(&so, &[FRAME_POINTER]);
        has(
            &v,
            FRAME_POINTER,
            &[
                &format!("`std_ops` ({std_ops:#x})"),
                "calls without a frame pointer",
                "-fno-omit-frame-pointer",
            ],
        );
        let failed = Failed {
            file: so.clone(),
            violations: v,
        };
        assert!(
            failed
                .to_string()
                .contains("Haiku's kernel debugger could not walk its stack"),
            "{failed}"
        );
        // Stripped, std_ops (static) has no symbol left: PT_GNU_EH_FRAME still finds it.
        let so = dir.good("nofp_stripped", &["-fomit-frame-pointer", "-s"]);
        let v = refuse(&so, &[FRAME_POINTER]);
        has(
            &v,
            FRAME_POINTER,
            &[&format!(
                "the function at {std_ops:#x} (no symbol) calls without"
            )],
        );
    }

    #[test]
    fn rbp_as_a_general_register_breaks_frame_pointer() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!(
            "{GOOD}\n__asm__(\".globl keep\\n.type keep,@function\\nkeep:\\n\
             push %rbp\\nmov %rdi, %rbp\\nmov %rbp, %rax\\npop %rbp\\nret\\n\
             .size keep, .-keep\\n\");\n"
        );
        let so = dir.addon("keep", &src, &[], Some(&lib));
        let keep = symbol_address(&so, "keep");
        let v = refuse(&so, &[FRAME_POINTER]);
        assert_eq!(v.len(), 1, "{}", list(&v));
        has(
            &v,
            FRAME_POINTER,
            &[
                &format!("`keep` ({keep:#x}) uses rbp as a general register"),
                &format!("`mov rbp,rdi` at {:#x} writes rbp", keep + 1),
            ],
        );
    }

    #[test]
    fn a_constructor_breaks_initializers() {
        let dir = Dir::new();
        let lib = dir.stub("kernel", STUB);
        let src = format!(
            "{GOOD}\nstatic int ready;\n\
             __attribute__((constructor)) static void setup(void) {{ ready = 1; }}\n\
             int is_ready(void) {{ return ready; }}\n"
        );
        let so = dir.addon("ctor", &src, &[], Some(&lib));
        let setup = symbol_address(&so, "setup");
        let v = refuse(&so, &[INITIALIZERS]);
        has(
            &v,
            INITIALIZERS,
            &[
                "DT_INIT_ARRAY at 0x",
                &format!("{setup:#x} (`setup`)"),
                "never runs",
            ],
        );
    }

    #[test]
    fn garbage_is_not_an_elf_file() {
        let v = refuse_bytes(b"not an ELF file at all, just text", &[ELF]);
        assert_eq!(v.len(), 1);
        let v = audit(Path::new("/nonexistent/add-on"), &table()).unwrap_err();
        assert_eq!(v[0].rule, ELF);
        assert!(v[0].message.contains("cannot read"), "{}", v[0]);
    }

    #[test]
    fn the_error_lists_every_violation() {
        let dir = Dir::new();
        let so = dir.addon(
            "many",
            "int f(void) { return 1; }\n",
            &["-Wl,--hash-style=gnu"],
            None,
        );
        let v = refuse(&so, &[DT_HASH, MODULES]);
        let failed = Failed {
            file: so.clone(),
            violations: v.clone(),
        };
        let text = failed.to_string();
        assert!(
            text.contains(&format!("({} violations)", v.len())),
            "{text}"
        );
        for x in &v {
            assert!(text.contains(&x.to_string()), "{text}");
        }
    }
}
