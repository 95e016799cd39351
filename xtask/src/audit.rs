//! `cargo xtask audit FILE`: does Haiku's kernel ELF loader accept this add-on?
//!
//! The checks follow `load_kernel_add_on` (`src/system/kernel/elf.cpp`) and
//! `arch_elf_relocate_rela` (`arch/x86/arch_elf.cpp`); each rule's message says why it
//! exists. The file is read the way
//! the loader reads it: program headers and the dynamic section, never section headers.
//! Section headers, when present, only say which bytes are code and name functions.
//!
//! Every violation has a stable rule name ([`RULES`]) and a message naming the symbol,
//! relocation offset or instruction address.
//!
//! One rule is not the loader's but its kernel debugger's: [`FRAME_POINTER`], that a
//! backtrace can walk through the add-on (see [`check_frames`] for the criterion and why).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use codegen::schema::ElfType;
use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Formatter, Instruction, InstructionInfoFactory,
    IntelFormatter, OpAccess, OpKind, Register,
};
use object::elf;
use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _, SectionHeader as _};
use object::read::elf::{Rela as _, Sym as _};
use object::{LittleEndian as LE, ReadRef as _};

/// The file cannot be read or is not a 64-bit little-endian x86-64 ELF file.
pub const ELF: &str = "elf";
/// PT_DYNAMIC with DT_HASH, DT_SYMTAB and DT_STRTAB.
pub const DT_HASH: &str = "dt-hash";
/// One R+X and one R+W PT_LOAD, and no more than 8 KiB of gaps between them.
pub const SEGMENTS: &str = "segments";
/// RELA only, of types NONE/64/GLOB_DAT/JUMP_SLOT/RELATIVE, inside the image; no RELR.
pub const RELOCATIONS: &str = "relocations";
/// No PT_TLS.
pub const TLS: &str = "tls";
/// No DT_INIT/DT_FINI and no non-empty init/fini/preinit arrays.
pub const INITIALIZERS: &str = "initializers";
/// Every undefined symbol is a kernel export of the same ELF type.
pub const IMPORTS: &str = "imports";
/// A defined global OBJECT `modules`.
pub const MODULES: &str = "modules";
/// No instruction addresses memory below the stack pointer.
pub const RED_ZONE: &str = "red-zone";
/// rbp is a frame pointer: set up before any call, never used as a general register.
pub const FRAME_POINTER: &str = "frame-pointer";

/// Every rule name, in the order the audit checks them.
pub const RULES: [&str; 10] = [
    ELF,
    DT_HASH,
    SEGMENTS,
    RELOCATIONS,
    TLS,
    INITIALIZERS,
    IMPORTS,
    MODULES,
    RED_ZONE,
    FRAME_POINTER,
];

const PAGE: u64 = 0x1000;
/// Packed relative relocations (`-z pack-relative-relocs`); `object` has no names for them.
const DT_RELRSZ: u32 = 35;
const DT_RELR: u32 = 36;

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// One of [`RULES`].
    pub rule: &'static str,
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.message)
    }
}

fn violation(rule: &'static str, message: impl Into<String>) -> Violation {
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

impl Segment {
    fn is_load(&self) -> bool {
        self.p_type == elf::PT_LOAD
    }
    fn executable(&self) -> bool {
        self.flags & elf::PF_X != 0
    }
    fn writable(&self) -> bool {
        self.flags & elf::PF_W != 0
    }
    /// The page-rounded region Haiku maps for a PT_LOAD.
    fn mapped(&self) -> (u64, u64) {
        let start = self.vaddr & !(PAGE - 1);
        (start, start + round_up(self.memsz + self.vaddr % PAGE))
    }
    /// The file offset of `vaddr..vaddr+len`, if the file holds those bytes.
    fn file_offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        let rel = vaddr.checked_sub(self.vaddr)?;
        (rel.checked_add(len)? <= self.filesz).then(|| self.offset + rel)
    }
    fn describe(&self, index: usize) -> String {
        format!(
            "{} #{index} ({}, vaddr {:#x}, memsz {:#x})",
            segment_type_name(self.p_type),
            flags_str(self.flags),
            self.vaddr,
            self.memsz
        )
    }
}

fn round_up(x: u64) -> u64 {
    x.div_ceil(PAGE) * PAGE
}

fn flags_str(flags: u32) -> String {
    let bit = |b, c| if flags & b != 0 { c } else { ' ' };
    [
        bit(elf::PF_R, 'R'),
        bit(elf::PF_W, 'W'),
        bit(elf::PF_X, 'E'),
    ]
    .iter()
    .collect()
}

fn segment_type_name(t: u32) -> String {
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

/// The ELF type of a dynamic symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymKind {
    Func,
    Object,
    NoType,
    Other(u8),
}

impl SymKind {
    fn from_st_type(t: u8) -> Self {
        match t {
            elf::STT_FUNC => Self::Func,
            elf::STT_OBJECT => Self::Object,
            elf::STT_NOTYPE => Self::NoType,
            other => Self::Other(other),
        }
    }
}

impl fmt::Display for SymKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

fn elf_type_name(t: ElfType) -> &'static str {
    match t {
        ElfType::Func => "FUNC",
        ElfType::Object => "OBJECT",
    }
}

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
    #[allow(dead_code)] // for the build's summary
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

fn reloc_name(t: u32) -> String {
    let name = match t {
        elf::R_X86_64_NONE => "NONE",
        elf::R_X86_64_64 => "64",
        elf::R_X86_64_PC32 => "PC32",
        elf::R_X86_64_GOT32 => "GOT32",
        elf::R_X86_64_PLT32 => "PLT32",
        elf::R_X86_64_COPY => "COPY",
        elf::R_X86_64_GLOB_DAT => "GLOB_DAT",
        elf::R_X86_64_JUMP_SLOT => "JUMP_SLOT",
        elf::R_X86_64_RELATIVE => "RELATIVE",
        elf::R_X86_64_GOTPCREL => "GOTPCREL",
        elf::R_X86_64_32 => "32",
        elf::R_X86_64_32S => "32S",
        elf::R_X86_64_16 => "16",
        elf::R_X86_64_PC16 => "PC16",
        elf::R_X86_64_8 => "8",
        elf::R_X86_64_PC8 => "PC8",
        elf::R_X86_64_DTPMOD64 => "DTPMOD64",
        elf::R_X86_64_DTPOFF64 => "DTPOFF64",
        elf::R_X86_64_TPOFF64 => "TPOFF64",
        elf::R_X86_64_TLSGD => "TLSGD",
        elf::R_X86_64_TLSLD => "TLSLD",
        elf::R_X86_64_DTPOFF32 => "DTPOFF32",
        elf::R_X86_64_GOTTPOFF => "GOTTPOFF",
        elf::R_X86_64_TPOFF32 => "TPOFF32",
        elf::R_X86_64_PC64 => "PC64",
        elf::R_X86_64_GOTOFF64 => "GOTOFF64",
        elf::R_X86_64_GOTPC32 => "GOTPC32",
        elf::R_X86_64_SIZE32 => "SIZE32",
        elf::R_X86_64_SIZE64 => "SIZE64",
        elf::R_X86_64_TLSDESC => "TLSDESC",
        elf::R_X86_64_IRELATIVE => "IRELATIVE",
        elf::R_X86_64_RELATIVE64 => "RELATIVE64",
        _ => return format!("R_X86_64_<{t}>"),
    };
    format!("R_X86_64_{name}")
}

/// The kernel import table: every `[[import]]` of `spec/haiku_driver.toml`.
pub fn kernel_imports() -> crate::Result<Vec<(String, ElfType)>> {
    let specs = crate::gen::load_all()?;
    let spec = specs
        .iter()
        .find(|s| s.name == "haiku_driver")
        .ok_or("no spec named haiku_driver")?;
    Ok(spec
        .imports
        .iter()
        .map(|i| (i.name.clone(), i.elf))
        .collect())
}

/// Audits `file` against the kernel import table; the error lists every violation.
pub fn check(file: &Path) -> crate::Result<Report> {
    let imports = kernel_imports()?;
    audit(file, &imports).map_err(|violations| {
        Box::new(Failed {
            file: file.to_path_buf(),
            violations,
        })
        .into()
    })
}

/// `cargo xtask audit FILE`: prints the report, or fails with every violation.
pub fn run(file: &Path) -> crate::Result {
    let report = check(file)?;
    println!(
        "{}: accepted by every rule of the Haiku kernel add-on audit",
        file.display()
    );
    println!("{report}");
    Ok(())
}

/// Audits the ELF file at `path`. `imports` is the kernel import table: name and ELF type.
pub fn audit(path: &Path, imports: &[(String, ElfType)]) -> Result<Report, Vec<Violation>> {
    let data = std::fs::read(path).map_err(|e| {
        vec![violation(
            ELF,
            format!("cannot read {}: {e}", path.display()),
        )]
    })?;
    audit_bytes(&data, imports)
}

/// Audits an ELF image held in memory.
pub fn audit_bytes(data: &[u8], imports: &[(String, ElfType)]) -> Result<Report, Vec<Violation>> {
    let mut out = Vec::new();
    let report = audit_into(data, imports, &mut out);
    if out.is_empty() {
        Ok(report)
    } else {
        out.sort_by_key(|v| RULES.iter().position(|r| *r == v.rule));
        Err(out)
    }
}

/// The dynamic section, by tag (a tag may repeat, e.g. DT_NEEDED).
struct Dynamic(Vec<(i64, u64)>);

impl Dynamic {
    fn get(&self, tag: u32) -> Option<u64> {
        let tag = i64::from(tag);
        self.0.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }
    fn all(&self, tag: u32) -> impl Iterator<Item = u64> + '_ {
        let tag = i64::from(tag);
        self.0
            .iter()
            .filter(move |(t, _)| *t == tag)
            .map(|(_, v)| *v)
    }
}

/// The file seen through its program headers.
struct Image<'a> {
    data: &'a [u8],
    segments: Vec<Segment>,
}

impl<'a> Image<'a> {
    fn offset(&self, vaddr: u64, len: u64) -> Option<u64> {
        self.segments
            .iter()
            .filter(|s| s.is_load())
            .find_map(|s| s.file_offset(vaddr, len))
    }
    fn bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let off = self.offset(vaddr, len)?;
        self.data.read_bytes_at(off, len).ok()
    }
    /// A NUL-terminated string at `vaddr`.
    fn string(&self, vaddr: u64) -> Option<String> {
        let off = self.offset(vaddr, 1)?;
        let end = self.data.len() as u64;
        let bytes = self.data.read_bytes_at_until(off..end, 0).ok()?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
    /// Inside a region Haiku maps (the first executable and first writable PT_LOAD).
    fn in_mapped_region(&self, vaddr: u64) -> bool {
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

fn audit_into(data: &[u8], imports: &[(String, ElfType)], out: &mut Vec<Violation>) -> Report {
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
    report.segments = phdrs
        .iter()
        .map(|p| Segment {
            p_type: p.p_type(LE),
            flags: p.p_flags(LE),
            offset: p.p_offset(LE),
            vaddr: p.p_vaddr(LE),
            filesz: p.p_filesz(LE),
            memsz: p.p_memsz(LE),
        })
        .collect();
    let image = Image {
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
        Some(Ok(Some(entries))) => Some(Dynamic(
            entries
                .iter()
                .map(|d| (d.d_tag(LE) as i64, d.d_val(LE)))
                .take_while(|(t, _)| *t != i64::from(elf::DT_NULL))
                .collect(),
        )),
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
    image: &Image<'_>,
    dynamic: &Dynamic,
    sections: Option<&object::read::elf::SectionTable<'_, elf::FileHeader64<LE>>>,
    out: &mut Vec<Violation>,
) -> Vec<DynSym> {
    let (Some(symtab), Some(strtab)) = (dynamic.get(elf::DT_SYMTAB), dynamic.get(elf::DT_STRTAB))
    else {
        return Vec::new();
    };
    let count = match dynamic.get(elf::DT_HASH) {
        Some(hash) => match image.bytes(hash, 8) {
            Some(b) => u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]])),
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
                    .map(|h| h.sh_size(LE) / 24)
            })
            .unwrap_or(0),
    };
    let size = std::mem::size_of::<elf::Sym64<LE>>() as u64;
    let Some(bytes) = image.bytes(symtab, count * size) else {
        out.push(violation(
            DT_HASH,
            format!("DT_SYMTAB {symtab:#x} ({count} symbols) is not inside the file's PT_LOADs"),
        ));
        return Vec::new();
    };
    let Ok(raw) = bytes.read_slice_at::<elf::Sym64<LE>>(0, count as usize) else {
        return Vec::new();
    };
    raw.iter()
        .map(|s| DynSym {
            name: image
                .string(strtab + u64::from(s.st_name(LE)))
                .unwrap_or_else(|| "<bad name>".into()),
            kind: SymKind::from_st_type(s.st_type()),
            bind: s.st_bind(),
            shndx: s.st_shndx(LE),
            value: s.st_value(LE),
            size: s.st_size(LE),
        })
        .collect()
}

fn check_relocations(
    image: &Image<'_>,
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
    if let Some(relr) = dynamic.get(DT_RELR) {
        let size = dynamic.get(DT_RELRSZ).unwrap_or(0);
        out.push(violation(
            RELOCATIONS,
            format!(
                "DT_RELR at {relr:#x} ({size} bytes of packed relative relocations): Haiku does \
                 not parse DT_RELR, so these relocations would silently not be applied; do not \
                 link with -z pack-relative-relocs"
            ),
        ));
    } else if dynamic.get(DT_RELRSZ).is_some() {
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
        let entry = std::mem::size_of::<elf::Rela64<LE>>() as u64;
        let relas = image.bytes(addr, size).and_then(|b| {
            b.read_slice_at::<elf::Rela64<LE>>(0, (size / entry) as usize)
                .ok()
        });
        let Some(relas) = relas else {
            out.push(violation(
                RELOCATIONS,
                format!("{name} at {addr:#x} ({size} bytes) is not inside the file's PT_LOADs"),
            ));
            continue;
        };
        for r in relas {
            let t = r.r_type(LE, false);
            *counts.entry(t).or_insert(0) += 1;
            let offset = r.r_offset(LE);
            if t == elf::R_X86_64_RELATIVE {
                relative.insert(offset, r.r_addend(LE) as u64);
            }
            let index = r.r_sym(LE, false) as usize;
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
            let why = match t {
                elf::R_X86_64_NONE
                | elf::R_X86_64_64
                | elf::R_X86_64_GLOB_DAT
                | elf::R_X86_64_JUMP_SLOT
                | elf::R_X86_64_RELATIVE => None,
                elf::R_X86_64_PC32 => Some(
                    "Haiku applies a dynamic PC32 as S+A-offset (wrong), and the kernel is \
                     more than 2 GiB away from any add-on; build everything -fPIC",
                ),
                elf::R_X86_64_DTPMOD64
                | elf::R_X86_64_DTPOFF64
                | elf::R_X86_64_TPOFF64
                | elf::R_X86_64_TLSGD
                | elf::R_X86_64_TLSLD
                | elf::R_X86_64_DTPOFF32
                | elf::R_X86_64_GOTTPOFF
                | elf::R_X86_64_TPOFF32
                | elf::R_X86_64_TLSDESC => Some(
                    "a thread-local storage relocation; Haiku's kernel loader has no TLS \
                     (\"unhandled relocation type\", B_BAD_DATA)",
                ),
                elf::R_X86_64_IRELATIVE => Some(
                    "an ifunc relocation; Haiku does not handle it (\"unhandled relocation \
                     type\", B_BAD_DATA)",
                ),
                elf::R_X86_64_COPY => Some(
                    "a copy relocation; Haiku does not handle it (\"unhandled relocation \
                     type\", B_BAD_DATA)",
                ),
                _ => Some("Haiku does not handle it (\"unhandled relocation type\", B_BAD_DATA)"),
            };
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
    image: &Image<'_>,
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

fn check_imports(syms: &[DynSym], imports: &[(String, ElfType)], out: &mut Vec<Violation>) {
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
            (_, None) => format!(
                "`{}` ({weak}{}) is imported but is not in the kernel import table \
                 (spec/haiku_driver.toml): Haiku would fail to resolve it (B_MISSING_SYMBOL)",
                s.name, s.kind
            ),
            (kind, Some(t)) => {
                let expected = match t {
                    ElfType::Func => SymKind::Func,
                    ElfType::Object => SymKind::Object,
                };
                if kind == expected {
                    continue;
                }
                format!(
                    "`{}` is imported as {weak}{kind} but the kernel exports it as {}: Haiku \
                     refuses the type mismatch (\"wrong type\", B_MISSING_SYMBOL)",
                    s.name,
                    elf_type_name(t)
                )
            }
        };
        out.push(violation(IMPORTS, message));
    }
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
    image: &Image<'a>,
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
            if let Some(b) = image.bytes(h, 8) {
                let nbucket = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                let nchain = u64::from(u32::from_le_bytes([b[4], b[5], b[6], b[7]]));
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
                if let Some(bytes) = image.bytes(at, a - at) {
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

/// The red-zone scan: a linear sweep that also follows the frame pointer.
///
/// An access below the stack pointer shows as `[rsp - n]`, or, in a function that set up a
/// frame with `mov rbp, rsp`, as `[rbp - n]` beyond what the function has since pushed or
/// subtracted from rsp (the frame is tracked only while every change of rsp is a known
/// push, pop or constant add/sub, and is dropped at a loop that may repeat such a change,
/// as stack probes do, so the rbp check never underestimates the frame).
struct Scan<'f> {
    functions: &'f [Symbol],
    factory: InstructionInfoFactory,
    formatter: IntelFormatter,
    instructions: u64,
}

/// rbp == rsp + `delta`, known since the `mov rbp, rsp` or the last change of rsp at `since`.
#[derive(Debug, Clone, Copy)]
struct Frame {
    delta: i64,
    since: u64,
}

impl<'f> Scan<'f> {
    fn new(functions: &'f [Symbol]) -> Self {
        Self {
            functions,
            factory: InstructionInfoFactory::new(),
            formatter: IntelFormatter::new(),
            instructions: 0,
        }
    }

    fn function_at(&self, addr: u64) -> Option<&'f Symbol> {
        let i = self.functions.partition_point(|s| s.value <= addr);
        self.functions[..i]
            .iter()
            .rev()
            .find(|s| s.value <= addr && addr < s.value + s.size.max(1))
    }

    fn starts_function(&self, addr: u64) -> bool {
        let i = self.functions.partition_point(|s| s.value < addr);
        self.functions.get(i).is_some_and(|s| s.value == addr)
    }

    fn range(&mut self, vaddr: u64, bytes: &[u8], out: &mut Vec<Violation>) {
        let mut decoder = Decoder::with_ip(64, bytes, vaddr, DecoderOptions::NONE);
        let mut instr = Instruction::default();
        let mut frame: Option<Frame> = None;
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            self.instructions += 1;
            if instr.is_invalid() {
                frame = None;
                continue;
            }
            if self.starts_function(instr.ip()) {
                frame = None;
            }
            self.check(&instr, frame, out);
            frame = self.next_frame(&instr, frame);
        }
    }

    fn check(&mut self, instr: &Instruction, frame: Option<Frame>, out: &mut Vec<Violation>) {
        let frame = frame.map(|f| f.delta);
        for op in 0..instr.op_count() {
            if instr.op_kind(op) != OpKind::Memory {
                continue;
            }
            // With an index register the displacement alone says nothing (`buf[i - 1]` is
            // `[rsp + i - 1]`); a function that really uses the red zone also has plain
            // `[rsp - n]` accesses (its stores and spills).
            if instr.memory_index() != Register::None {
                continue;
            }
            let base = instr.memory_base();
            let disp = match base {
                Register::RSP | Register::RBP => instr.memory_displacement64() as i64,
                Register::ESP | Register::EBP => i64::from(instr.memory_displacement32() as i32),
                _ => continue,
            };
            let below = match base {
                Register::RSP | Register::ESP => -disp,
                _ => match frame {
                    Some(d) => -d - disp,
                    None => continue,
                },
            };
            if below <= 0 {
                continue;
            }
            let access = match self.factory.info(instr).op_access(op) {
                OpAccess::Read | OpAccess::CondRead => "reads",
                OpAccess::Write | OpAccess::CondWrite => "writes",
                OpAccess::ReadWrite | OpAccess::ReadCondWrite => "reads and writes",
                _ => continue, // lea, nop, prefetch: no access
            };
            let mut text = String::new();
            self.formatter.format(instr, &mut text);
            let place = match self.function_at(instr.ip()) {
                Some(f) => format!(" in `{}`", f.name),
                None => String::new(),
            };
            let via = match (base, frame) {
                (Register::RBP | Register::EBP, Some(d)) => {
                    format!(" (rbp is rsp+{d} here)")
                }
                _ => String::new(),
            };
            out.push(violation(
                RED_ZONE,
                format!(
                    "{:#x}{place}: `{text}` {access} {below} bytes below rsp{via}; an interrupt \
                     on the same kernel stack would clobber it (build with -C no-redzone=yes / \
                     -mno-red-zone, including the precompiled core/alloc)",
                    instr.ip()
                ),
            ));
        }
    }

    fn next_frame(&mut self, instr: &Instruction, frame: Option<Frame>) -> Option<Frame> {
        let ip = instr.ip();
        let at = |delta| Some(Frame { delta, since: ip });
        let reg_to_reg = instr.op_count() == 2
            && instr.op0_kind() == OpKind::Register
            && instr.op1_kind() == OpKind::Register;
        if reg_to_reg && matches!(instr.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64) {
            match (instr.op0_register(), instr.op1_register()) {
                (Register::RBP, Register::RSP) | (Register::RSP, Register::RBP) => return at(0),
                _ => {}
            }
        }
        let frame = frame?;
        let d = frame.delta;
        if matches!(
            instr.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) && instr.near_branch_target() <= frame.since
        {
            return None; // a loop that may move rsp again
        }
        if matches!(
            instr.flow_control(),
            FlowControl::Interrupt | FlowControl::Exception | FlowControl::Return
        ) {
            return None;
        }
        if matches!(
            instr.flow_control(),
            FlowControl::Call | FlowControl::IndirectCall
        ) {
            return Some(frame); // the callee returns with rsp where it was
        }
        if instr.op0_kind() == OpKind::Register && instr.op0_register() == Register::RSP {
            let imm = || instr.immediate(1) as i64;
            match instr.code() {
                Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32 => return at(d + imm()),
                Code::Add_rm64_imm8 | Code::Add_rm64_imm32 => return at(d - imm()),
                _ => {}
            }
        }
        let increment = i64::from(instr.stack_pointer_increment());
        let info = self.factory.info(instr);
        let written = |r: Register| writes_register(info, r);
        if written(Register::RBP) {
            return None;
        }
        if increment != 0 {
            return at(d - increment);
        }
        if written(Register::RSP) {
            return None;
        }
        Some(frame)
    }
}

/// The functions PT_GNU_EH_FRAME knows: one per entry of `.eh_frame_hdr`'s search table
/// (one per FDE; rustc and gcc give every function unwind information), its start and,
/// when its FDE and CIE can be read, its length. This is what finds the functions of a
/// stripped add-on, whose only symbols are its exports. `None` without a readable table.
fn unwind_functions(image: &Image<'_>) -> Option<Vec<(u64, Option<u64>)>> {
    let seg = image
        .segments
        .iter()
        .find(|s| s.p_type == elf::PT_GNU_EH_FRAME)?;
    let hdr = image.bytes(seg.vaddr, seg.filesz)?;
    let [1, ptr_enc, count_enc, table_enc, ..] = *hdr else {
        return None;
    };
    let mut at = 4;
    read_encoded(hdr, &mut at, ptr_enc, seg.vaddr)?; // eh_frame_ptr: not needed
    let count = read_encoded(hdr, &mut at, count_enc, seg.vaddr)?;
    let mut functions = Vec::new();
    for _ in 0..count {
        let start = read_encoded(hdr, &mut at, table_enc, seg.vaddr)?;
        let fde = read_encoded(hdr, &mut at, table_enc, seg.vaddr)?;
        functions.push((start, fde_length(image, fde)));
    }
    Some(functions)
}

/// The `pc_range` of the FDE at `fde`, in the pointer format its CIE's 'R' augmentation
/// gives.
fn fde_length(image: &Image<'_>, fde: u64) -> Option<u64> {
    let head = image.bytes(fde, 8)?;
    let length = u64::from(u32::from_le_bytes(head[0..4].try_into().ok()?));
    // 0xffffffff would be 64-bit DWARF, which no x86-64 toolchain emits here.
    let cie_offset = u64::from(u32::from_le_bytes(head[4..8].try_into().ok()?));
    if !(8..0xffff_fff0).contains(&length) || cie_offset == 0 {
        return None;
    }
    // The CIE pointer counts back from its own field.
    let enc = cie_pointer_encoding(image, fde.checked_add(4)?.checked_sub(cie_offset)?)?;
    let body_at = fde.checked_add(8)?;
    let body = image.bytes(body_at, length - 4)?;
    let mut at = 0;
    // pc_begin, then pc_range in the same format without the pc-relative part.
    read_encoded(body, &mut at, enc, body_at)?;
    read_encoded(body, &mut at, enc & 0x0f, 0)
}

/// The encoding of the FDE pointers of the CIE at `cie` ('R' of a "z" augmentation).
fn cie_pointer_encoding(image: &Image<'_>, cie: u64) -> Option<u8> {
    let length = u64::from(u32::from_le_bytes(image.bytes(cie, 4)?.try_into().ok()?));
    let body = image.bytes(cie.checked_add(4)?, length)?;
    let (id, version) = (body.get(0..4)?, *body.get(4)?);
    if id != [0; 4] {
        return None;
    }
    let mut at = 5;
    let aug_len = body.get(at..)?.iter().position(|&b| b == 0)?;
    let aug = &body[at..at + aug_len];
    at += aug_len + 1;
    let Some(rest) = aug.strip_prefix(b"z") else {
        return aug.is_empty().then_some(0); // no augmentation: absolute pointers
    };
    let leb = |at: &mut usize| -> Option<()> {
        while *body.get(*at)? & 0x80 != 0 {
            *at += 1;
        }
        *at += 1;
        Some(())
    };
    leb(&mut at)?; // code alignment
    leb(&mut at)?; // data alignment
    if version == 1 {
        at += 1; // return address register
    } else {
        leb(&mut at)?;
    }
    leb(&mut at)?; // augmentation data length
    for &c in rest {
        match c {
            b'R' => return body.get(at).copied(),
            b'L' => at += 1,
            b'P' => {
                let enc = *body.get(at)?;
                at += 1;
                read_encoded(body, &mut at, enc & 0x0f, 0)?; // the personality routine
            }
            b'S' | b'B' => {}
            _ => return None,
        }
    }
    Some(0)
}

/// A `DW_EH_PE_*`-encoded value at `data[*at]`; `base` is the address of `data`:
/// pc-relative values count from the field itself, data-relative ones (only in
/// `.eh_frame_hdr`) from `base`.
fn read_encoded(data: &[u8], at: &mut usize, enc: u8, base: u64) -> Option<u64> {
    let size = match enc & 0x0f {
        0x00 | 0x04 | 0x0c => 8,
        0x02 | 0x0a => 2,
        0x03 | 0x0b => 4,
        _ => return None, // DW_EH_PE_omit, the LEB128 forms: never in these tables
    };
    let b = data.get(*at..*at + size)?;
    let mut raw = [0u8; 8];
    raw[..size].copy_from_slice(b);
    let mut value = u64::from_le_bytes(raw);
    if enc & 0x08 != 0 {
        let shift = 64 - 8 * size as u32;
        value = (((value << shift) as i64) >> shift) as u64; // sign-extend sdata2/4
    }
    let value = match enc & 0xf0 {
        0x00 => value,
        0x10 => base.wrapping_add(*at as u64).wrapping_add(value),
        0x30 => base.wrapping_add(value),
        _ => return None,
    };
    *at += size;
    Some(value)
}

/// The frame-pointer rule: a backtrace can walk through every function of the add-on.
///
/// Haiku's kernel debugger (and a panic's backtrace) walks the stack through rbp: `[rbp]`
/// is the caller's rbp and `[rbp+8]` the return address. Haiku builds its x86_64 kernel
/// code with `-fno-omit-frame-pointer` for this. The criterion is what that flag guarantees
/// for gcc's own output, checked per function (from its symbol or FDE start to the end its
/// symbol or FDE gives, or to the next start):
///
/// - **rbp is never a general register.** The only writes of rbp allowed are the frame
///   setup (`mov rbp, rsp` right after `push rbp`, no rsp change in between, or `enter`)
///   and its restore (`pop rbp` after a `push rbp`, `leave`). Anything else leaves a value
///   in rbp that a backtrace taken below it (in a callee, or by an interrupt) follows as a
///   frame chain: the walk breaks, and the debugger reads wherever it points.
/// - **Every call is made with the frame set up**: the first `call` in address order comes
///   after `push rbp; mov rbp, rsp`. A function that calls without a frame leaves its
///   caller's rbp in place, so every backtrace through the call skips a frame. Address
///   order is how gcc and LLVM lay out a prologue: at the entry or, shrink-wrapped, after
///   an early exit that makes no call (part of the add-on is built like that).
/// - **Leaves may be frameless.** A function that makes no call and never writes rbp
///   keeps the chain intact; only an interrupt landing inside it sees it, shown from the
///   interrupt frame, its caller then missing from that one trace. gcc 12 with
///   `-fno-omit-frame-pointer -O2` emits such leaves (a leaf that needs no stack, a tail
///   call), so kernel code built the way Haiku builds it has them. So does the
///   precompiled `core`/`alloc` of the stable toolchain, built with frame pointers only in
///   functions that call (every function of it that calls sets up rbp, none of its leaves
///   does), which cannot be rebuilt without rust-src and build-std. The add-on's own code
///   (`-C force-frame-pointers=yes`) sets up rbp in leaves too; `cargo xtask build-haiku`
///   checks by name that every frameless leaf is precompiled, which a stripped file
///   cannot tell, so here they are listed in the report rather than refused.
///
/// Without the flag, LLVM keeps other values in rbp, or calls without a frame, in nearly
/// every function of the add-on that calls: the rule refuses it and names each one.
fn check_frames(
    ranges: &[(u64, &[u8])],
    symbols: &[Symbol],
    symbols_from: &str,
    unwind: Option<&[(u64, Option<u64>)]>,
    out: &mut Vec<Violation>,
) -> Frames {
    // Each start with its first name (`symbols` is sorted by address, then name) and the
    // lengths its symbol and its FDE give.
    let mut starts: BTreeMap<u64, (Option<&Symbol>, Option<u64>)> = BTreeMap::new();
    for s in symbols {
        let e = starts.entry(s.value).or_default();
        if e.0.is_none() {
            e.0 = Some(s);
        }
    }
    for &(a, len) in unwind.unwrap_or_default() {
        let e = starts.entry(a).or_default();
        e.1 = e.1.or(len);
    }
    let mut from = Vec::new();
    if !symbols.is_empty() {
        from.push(symbols_from);
    }
    if unwind.is_some() {
        from.push("PT_GNU_EH_FRAME");
    }
    let mut frames = Frames {
        from: if from.is_empty() {
            "nowhere: no function symbols, no PT_GNU_EH_FRAME".into()
        } else {
            from.join(" and ")
        },
        ..Frames::default()
    };
    let starts: Vec<_> = starts.into_iter().collect();
    let mut factory = InstructionInfoFactory::new();
    for (i, &(start, (sym, unwind_len))) in starts.iter().enumerate() {
        let Some(&(base, bytes)) = ranges
            .iter()
            .find(|(v, b)| (*v..*v + b.len() as u64).contains(&start))
        else {
            continue; // not code (a symbol in a data section, a stale FDE)
        };
        let mut end = base + bytes.len() as u64;
        if let Some(&(next, _)) = starts.get(i + 1) {
            end = end.min(next);
        }
        // Without section headers the executable segment holds data too (.rodata,
        // .eh_frame): a length keeps the last function out of it.
        for len in [sym.map(|s| s.size), unwind_len].into_iter().flatten() {
            if len > 0 {
                end = end.min(start.saturating_add(len));
            }
        }
        let code = &bytes[(start - base) as usize..(end - base) as usize];
        frames.functions += 1;
        let name = sym.map_or(String::new(), |s| {
            format!("{:#}", rustc_demangle::demangle(&s.name))
        });
        let who = if name.is_empty() {
            format!("the function at {start:#x} (no symbol)")
        } else {
            format!("`{name}` ({start:#x})")
        };
        const FIX: &str = "build with -C force-frame-pointers=yes / -fno-omit-frame-pointer";
        let message = match frame_use(start, code, &mut factory) {
            FrameUse::Frame => {
                frames.framed += 1;
                continue;
            }
            FrameUse::Leaf => {
                frames.leaves.push((start, name));
                continue;
            }
            FrameUse::CallsWithoutFrame { at, text } => format!(
                "{who} calls without a frame pointer: `{text}` at {at:#x} comes before any \
                 `push rbp; mov rbp, rsp`, so every backtrace taken below that call (a panic, \
                 a fault, Haiku's kernel debugger) skips a frame; {FIX}"
            ),
            FrameUse::Clobbers { at, text, why } => format!(
                "{who} uses rbp as a general register: `{text}` at {at:#x} {why}, so a \
                 backtrace taken below it follows a broken frame chain; {FIX}"
            ),
        };
        frames.broken += 1;
        out.push(violation(FRAME_POINTER, message));
    }
    frames
}

/// How one function treats rbp ([`check_frames`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum FrameUse {
    /// Sets up rbp as its frame pointer before any call; otherwise only restores it.
    Frame,
    /// No frame, no call, rbp never written.
    Leaf,
    /// The first call, made before any frame setup.
    CallsWithoutFrame { at: u64, text: String },
    /// The first write of rbp that is neither the frame setup nor its restore.
    Clobbers {
        at: u64,
        text: String,
        why: &'static str,
    },
}

fn frame_use(start: u64, code: &[u8], factory: &mut InstructionInfoFactory) -> FrameUse {
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut instr = Instruction::default();
    let mut formatter = IntelFormatter::new();
    // Call targets read like the addresses around them in the message.
    let o = formatter.options_mut();
    o.set_hex_prefix("0x");
    o.set_hex_suffix("");
    o.set_uppercase_hex(false);
    o.set_branch_leading_zeros(false);
    let mut text = |instr: &Instruction| {
        let mut s = String::new();
        formatter.format(instr, &mut s);
        s
    };
    // `saved`: rbp was pushed; `pushed`: ... and rsp has not moved since, so `mov rbp, rsp`
    // makes [rbp] the saved rbp; `framed`: the frame is set up.
    let (mut saved, mut pushed, mut framed) = (false, false, false);
    let mut first_call = None;
    while decoder.can_decode() {
        decoder.decode_out(&mut instr);
        if instr.is_invalid() {
            pushed = false;
            continue;
        }
        let op0 = (instr.op_count() > 0 && instr.op0_kind() == OpKind::Register)
            .then(|| instr.op0_register());
        let reg_to_reg = instr.op_count() == 2
            && instr.op0_kind() == OpKind::Register
            && instr.op1_kind() == OpKind::Register;
        match instr.code() {
            Code::Push_r64 if op0 == Some(Register::RBP) => {
                (saved, pushed) = (true, true);
                continue;
            }
            Code::Mov_r64_rm64 | Code::Mov_rm64_r64
                if reg_to_reg
                    && instr.op0_register() == Register::RBP
                    && instr.op1_register() == Register::RSP =>
            {
                if !pushed {
                    return FrameUse::Clobbers {
                        at: instr.ip(),
                        text: text(&instr),
                        why: "points rbp at the stack where the caller's rbp was not just \
                              pushed",
                    };
                }
                (framed, pushed) = (true, false);
                continue;
            }
            Code::Enterq_imm16_imm8 => {
                (saved, framed, pushed) = (true, true, false);
                continue;
            }
            Code::Pop_r64 if op0 == Some(Register::RBP) && saved => {
                pushed = false;
                continue;
            }
            Code::Leaveq if framed => {
                pushed = false;
                continue;
            }
            _ => {}
        }
        if !framed
            && first_call.is_none()
            && matches!(
                instr.flow_control(),
                FlowControl::Call | FlowControl::IndirectCall
            )
        {
            first_call = Some((instr.ip(), text(&instr)));
        }
        let info = factory.info(&instr);
        let writes = |r: Register| writes_register(info, r);
        if writes(Register::RBP) {
            return FrameUse::Clobbers {
                at: instr.ip(),
                text: text(&instr),
                why: "writes rbp",
            };
        }
        if instr.stack_pointer_increment() != 0 || writes(Register::RSP) {
            pushed = false;
        }
    }
    match first_call {
        Some((at, text)) => FrameUse::CallsWithoutFrame { at, text },
        None if framed => FrameUse::Frame,
        None => FrameUse::Leaf,
    }
}

/// Whether the instruction `info` describes may write (all of) register `r`.
fn writes_register(info: &iced_x86::InstructionInfo, r: Register) -> bool {
    info.used_registers().iter().any(|u| {
        u.register().full_register() == r
            && matches!(
                u.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            )
    })
}

#[cfg(test)]
mod tests {
    //! Fixtures are built here, in a temporary directory, with the system C compiler and
    //! linker: a stub `kernel_x86_64` and add-ons linked the way the real one is, each
    //! breaking one rule.

    use super::*;
    use std::process::Command;

    /// The add-on's code generation (no red zone, frame pointers) and link, as
    /// `crate::haiku::rustflags` gives them, for gcc and GNU ld (which has no `--no-rosegment`: `-z noseparate-code`
    /// alone gives one R+X and one RW PT_LOAD).
    const ADDON: &[&str] = &[
        "-shared",
        "-nostdlib",
        "-fPIC",
        "-O2",
        "-mno-red-zone",
        "-fno-omit-frame-pointer",
        "-Wl,--hash-style=sysv",
        "-Wl,-z,noseparate-code",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=0x1000",
    ];

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

    fn table() -> Vec<(String, ElfType)> {
        [
            ("create_sem", ElfType::Func),
            ("dprintf", ElfType::Func),
            ("__stack_chk_guard", ElfType::Object),
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
            self.cc(&[
                "-shared",
                "-nostdlib",
                "-fPIC",
                "-O2",
                "-Wl,-soname,kernel_x86_64",
                "-o",
                &so,
                &c,
            ]);
            format!("-L{}", self.path(sub).display())
        }

        /// An add-on from `source` with [`ADDON`] + `extra` (later flags win), linked
        /// against the stub in `-L` dir `lib` when given.
        fn addon(&self, name: &str, source: &str, extra: &[&str], lib: Option<&str>) -> PathBuf {
            let c = format!("{name}.c");
            let so = format!("{name}.so");
            std::fs::write(self.path(&c), source).unwrap();
            let mut args: Vec<&str> = ADDON.to_vec();
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
    fn a_good_add_on_passes_against_the_real_import_table() {
        let dir = Dir::new();
        let so = dir.good("good", &[]);
        let imports = kernel_imports().unwrap();
        assert!(imports.contains(&("create_sem".into(), ElfType::Func)));
        assert!(imports.contains(&("__stack_chk_guard".into(), ElfType::Object)));
        audit(&so, &imports).unwrap();
        check(&so).unwrap();
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
    fn frame_use_follows_the_prologue() {
        let use_of = |code: &[u8]| frame_use(0x1000, code, &mut InstructionInfoFactory::new());
        let (push, mov, call, pop, ret) = (
            &[0x55][..],             // push rbp
            &[0x48, 0x89, 0xe5][..], // mov rbp, rsp
            &[0xe8, 0, 0, 0, 0][..], // call (the next instruction)
            &[0x5d][..],             // pop rbp
            &[0xc3][..],             // ret
        );
        assert_eq!(
            use_of(&[push, mov, call, pop, ret].concat()),
            FrameUse::Frame
        );
        // gcc schedules other instructions between the push and the mov.
        let xor = &[0x31, 0xc0][..]; // xor eax, eax
        assert_eq!(
            use_of(&[push, xor, mov, call, pop, ret].concat()),
            FrameUse::Frame
        );
        // Shrink-wrapped: an early exit before the prologue.
        let early = [
            &[0x48, 0x85, 0xff, 0x74, 0x0b][..], // test rdi, rdi; je +11 (to the xor)
            push,
            mov,
            call,
            pop,
            ret,
            xor,
            ret,
        ];
        assert_eq!(use_of(&early.concat()), FrameUse::Frame);
        // enter / leave.
        let enter = &[0xc8, 0x10, 0x00, 0x00][..]; // enter 16, 0
        assert_eq!(
            use_of(&[enter, call, &[0xc9], ret].concat()),
            FrameUse::Frame
        );
        // Leaves: no call, rbp untouched, a tail call included.
        let lea = &[0x8d, 0x44, 0x7f, 0x01][..]; // lea eax, [rdi+rdi*2+1]
        assert_eq!(use_of(&[lea, ret].concat()), FrameUse::Leaf);
        assert_eq!(use_of(&[0xe9, 0, 0, 0, 0]), FrameUse::Leaf); // jmp
                                                                 // A call with only rsp moved.
        let sub = &[0x48, 0x83, 0xec, 0x08][..]; // sub rsp, 8
        assert_eq!(
            use_of(&[sub, call, ret].concat()),
            FrameUse::CallsWithoutFrame {
                at: 0x1004,
                text: "call 0x1009".into()
            }
        );
        // A call before the prologue.
        assert!(matches!(
            use_of(&[call, push, mov, call, pop, ret].concat()),
            FrameUse::CallsWithoutFrame { at: 0x1000, .. }
        ));
        // rbp written: a callee-saved value, zeroed, popped without a push, or pointed at
        // the stack after another push.
        let clobber = |code: &[u8]| match use_of(code) {
            FrameUse::Clobbers { at, text, .. } => (at, text),
            other => panic!("{other:?}"),
        };
        let mov_rdi = &[0x48, 0x89, 0xfd][..]; // mov rbp, rdi
        assert_eq!(
            clobber(&[push, mov_rdi, call, pop, ret].concat()),
            (0x1001, "mov rbp,rdi".into())
        );
        assert_eq!(clobber(&[0x31, 0xed, 0xc3]), (0x1000, "xor ebp,ebp".into()));
        assert_eq!(clobber(&[pop, ret].concat()), (0x1000, "pop rbp".into()));
        let push_rbx = &[0x53][..];
        assert_eq!(
            clobber(&[push, push_rbx, mov, call].concat()),
            (0x1002, "mov rbp,rsp".into())
        );
        // After the frame, the epilogue's pop and a later path's call are fine.
        let late_call = [push, mov, pop, ret, call, ret];
        assert_eq!(use_of(&late_call.concat()), FrameUse::Frame);
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

    /// Bytes from the precompiled `core` of the stable toolchain (a leaf
    /// `Iterator::last`), which keeps two XMM values in the red zone.
    #[test]
    fn scan_finds_red_zone_use_in_raw_code() {
        let code = [
            0x0f, 0x10, 0x07, // movups xmm0, [rdi]
            0x0f, 0x29, 0x44, 0x24, 0xd8, // movaps [rsp-0x28], xmm0
            0x48, 0x8b, 0x4c, 0x24, 0xe0, // mov rcx, [rsp-0x20]
            0x8b, 0x44, 0x8c, 0xe4, // mov eax, [rsp+rcx*4-0x1c] (indexed: not judged)
            0x48, 0x8d, 0x44, 0x24, 0xf0, // lea rax, [rsp-0x10] (no access)
            0x0f, 0x18, 0x4c, 0x24, 0xf0, // prefetcht0 [rsp-0x10] (no access)
            0xc3, // ret
        ];
        let mut out = Vec::new();
        let mut scan = Scan::new(&[]);
        scan.range(0x1000, &code, &mut out);
        let text: Vec<String> = out.iter().map(|v| v.message.clone()).collect();
        assert_eq!(out.len(), 2, "{text:#?}");
        assert!(text[0].starts_with("0x1003: `movaps [rsp-28h],xmm0` writes 40 bytes"));
        assert!(text[1].starts_with("0x1008: `mov rcx,[rsp-20h]` reads 32 bytes"));
    }

    #[test]
    fn scan_follows_the_frame_pointer() {
        let frame = |body: &[u8]| {
            let mut code = vec![0x55, 0x48, 0x89, 0xe5]; // push rbp; mov rbp, rsp
            code.extend_from_slice(body);
            code.extend_from_slice(&[0x5d, 0x8b, 0x45, 0xfc, 0xc3]); // pop rbp; mov eax, [rbp-4]; ret
            let mut out = Vec::new();
            Scan::new(&[]).range(0, &code, &mut out);
            out.into_iter().map(|v| v.message).collect::<Vec<_>>()
        };
        let store = [0x89, 0x7d, 0xfc]; // mov [rbp-4], edi
        let v = frame(&store);
        assert_eq!(v.len(), 1, "{v:#?}");
        assert!(
            v[0].contains("4 bytes below rsp (rbp is rsp+0 here)"),
            "{v:#?}"
        );
        // sub rsp, 16 first: the store is inside the frame.
        assert_eq!(
            frame(&[&[0x48, 0x83, 0xec, 0x10][..], &store].concat()),
            [] as [String; 0]
        );
        // push rbx: rbp = rsp + 8, so [rbp-4] is above rsp and [rbp-0x10] below it.
        assert_eq!(frame(&[&[0x53][..], &store].concat()), [] as [String; 0]);
        let v = frame(&[0x53, 0x89, 0x7d, 0xf0]);
        assert!(
            v[0].contains("8 bytes below rsp (rbp is rsp+8 here)"),
            "{v:#?}"
        );
        // A call in between changes nothing; an unknown change of rsp stops the tracking.
        let v = frame(&[&[0xe8, 0, 0, 0, 0][..], &store].concat());
        assert_eq!(v.len(), 1, "{v:#?}");
        // A stack-probe loop subtracts 0x1000 as often as it runs: the frame is unknown.
        let probe = [
            0x49, 0x89, 0xe3, // mov r11, rsp
            0x49, 0x81, 0xeb, 0x00, 0x30, 0x00, 0x00, // sub r11, 0x3000
            0x48, 0x81, 0xec, 0x00, 0x10, 0x00, 0x00, // 1: sub rsp, 0x1000
            0x48, 0xc7, 0x04, 0x24, 0x00, 0x00, 0x00, 0x00, // mov qword [rsp], 0
            0x4c, 0x39, 0xdc, // cmp rsp, r11
            0x75, 0xec, // jne 1b
            0x89, 0x85, 0x00, 0xe0, 0xff, 0xff, // mov [rbp-0x2000], eax
        ];
        assert_eq!(frame(&probe), [] as [String; 0]);
        // A loop that does not move rsp keeps the frame.
        let v = frame(&[&store[..], &[0x75, 0xfb]].concat()); // 1: mov [rbp-4], edi; jne 1b
        assert_eq!(v.len(), 1, "{v:#?}");
        let and_rsp = [0x48, 0x83, 0xe4, 0xf0]; // and rsp, -16
        assert_eq!(frame(&[&and_rsp[..], &store].concat()), [] as [String; 0]);
    }
}
