//! The rule table: every rule of a Haiku kernel add-on, with what Haiku's kernel loader
//! does about it and what we require (the audit's policy, which may be stricter).
//!
//! The loader's refusals ([`Refusal`]) and remarks ([`Note`]) carry the status and the
//! message the simulator's loader reports, and name their rule; [`reloc`] is the table of
//! dynamic relocation types, what Haiku's `arch_elf_relocate_rela` does with each and
//! whether the audit accepts it.

use std::fmt;

use object::elf;
use spec::haiku_driver as hd;

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

/// `load_kernel_add_on`, `verify_eheader`, `elf_parse_dynamic_section`,
/// `elf_resolve_symbol` and `elf_relocate`.
pub const ELF_CPP: &str = "src/system/kernel/elf.cpp";
/// `arch_elf_relocate_rela` for x86_64.
pub const ARCH_ELF_CPP: &str = "src/system/kernel/arch/x86/arch_elf.cpp";
/// The module loader: `modules` is looked up with `get_image_symbol`.
pub const MODULE_CPP: &str = "src/system/kernel/module.cpp";
/// The kernel debugger's stack trace, which follows rbp.
pub const ARCH_DEBUG_CPP: &str = "src/system/kernel/arch/x86/arch_debug.cpp";
/// The x86_64 kernel's code-generation flags (`-mno-red-zone`, frame pointers).
pub const ARCHITECTURE_RULES: &str = "build/jam/ArchitectureRules";

/// What Haiku's kernel loader does with a file that breaks a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Haiku {
    /// Refuses the add-on (the statuses are in [`Refusal::status`]).
    Refuses,
    /// Loads it, but not as its author meant (a segment or relocations left out, code never
    /// run).
    MisLoads,
    /// Not the loader's business: it loads the file, and the kernel fails later.
    Loads,
}

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The audit's rule name.
    pub id: &'static str,
    /// What we require: a file that breaks this is refused by the audit.
    pub requires: &'static str,
    /// What Haiku does with a file that breaks it.
    pub haiku: Haiku,
    /// How, in Haiku's words.
    pub haiku_does: &'static str,
    /// Where in Haiku's source tree.
    pub sources: &'static [&'static str],
}

/// Every rule, in the order the audit checks and reports them.
pub const RULES: [Rule; 10] = [
    Rule {
        id: ELF,
        requires: "a readable 64-bit little-endian x86-64 ELF file with program headers",
        haiku: Haiku::Refuses,
        haiku_does: "verify_eheader refuses a file without the ELF magic, ELFCLASS64 or \
                     usable program headers (B_NOT_AN_EXECUTABLE)",
        sources: &[ELF_CPP],
    },
    Rule {
        id: DT_HASH,
        requires: "PT_DYNAMIC with DT_HASH, DT_SYMTAB and DT_STRTAB",
        haiku: Haiku::Refuses,
        haiku_does: "elf_parse_dynamic_section refuses a dynamic section without the SysV \
                     hash table, the symbol table or the string table (B_ERROR); DT_GNU_HASH \
                     is ignored",
        sources: &[ELF_CPP],
    },
    Rule {
        id: SEGMENTS,
        requires: "one R+X and one R+W PT_LOAD, no other PT_LOAD, and no more than 8 KiB of \
                   gaps between them",
        haiku: Haiku::Refuses,
        haiku_does: "load_kernel_add_on maps the first writable PT_LOAD as data and the first \
                     executable one as text, skips further ones (\"we've already created \
                     this segment\") and ones with weird flags, and refuses segments that \
                     span more than their pages plus 8 KiB (B_BAD_DATA)",
        sources: &[ELF_CPP],
    },
    Rule {
        id: RELOCATIONS,
        requires: "RELA only, of types NONE/64/GLOB_DAT/JUMP_SLOT/RELATIVE, inside the \
                   mapped image; no DT_RELR",
        haiku: Haiku::Refuses,
        haiku_does: "DT_REL is \"not supported on x86_64\" (B_ERROR); arch_elf_relocate_rela \
                     applies NONE, 64, PC32 (as S+A-r_offset), GLOB_DAT, JUMP_SLOT and \
                     RELATIVE and refuses every other type (\"unhandled relocation type\", \
                     B_BAD_DATA) and targets outside the image (B_BAD_ADDRESS); DT_RELR is \
                     not parsed, so its relocations are silently not applied",
        sources: &[ELF_CPP, ARCH_ELF_CPP],
    },
    Rule {
        id: TLS,
        requires: "no PT_TLS",
        haiku: Haiku::Refuses,
        haiku_does: "no thread-local storage for kernel add-ons: PT_TLS is an unhandled \
                     program header and TLS relocations are unhandled relocation types \
                     (B_BAD_DATA)",
        sources: &[ELF_CPP, ARCH_ELF_CPP],
    },
    Rule {
        id: INITIALIZERS,
        requires: "no DT_INIT/DT_FINI and no non-empty init/fini/preinit arrays",
        haiku: Haiku::MisLoads,
        haiku_does: "initializers and finalizers of kernel add-ons are never run",
        sources: &[ELF_CPP],
    },
    Rule {
        id: IMPORTS,
        requires: "every undefined symbol is in the kernel import table \
                   (spec/haiku_driver.toml) with the same ELF type",
        haiku: Haiku::Refuses,
        haiku_does: "elf_resolve_symbol looks a symbol up in the kernel, then in the image \
                     (the other way round with DT_SYMBOLIC), and refuses one it cannot find \
                     or whose ELF type differs (\"wrong type\", B_MISSING_SYMBOL)",
        sources: &[ELF_CPP],
    },
    Rule {
        id: MODULES,
        requires: "a defined global OBJECT `modules`",
        haiku: Haiku::Refuses,
        haiku_does: "the module loader finds the add-on's module_info table through the \
                     symbol `modules` and refuses an image without it (B_BAD_TYPE)",
        sources: &[MODULE_CPP],
    },
    Rule {
        id: RED_ZONE,
        requires: "no instruction addresses memory below the stack pointer",
        haiku: Haiku::Loads,
        haiku_does: "interrupts run on the same kernel stack, so data below rsp is \
                     clobbered; Haiku builds its x86_64 kernel with -mno-red-zone",
        sources: &[ARCHITECTURE_RULES],
    },
    Rule {
        id: FRAME_POINTER,
        requires: "rbp is a frame pointer: set up before any call, never used as a general \
                   register",
        haiku: Haiku::Loads,
        haiku_does: "the kernel debugger and a panic's backtrace walk the stack through rbp; \
                     Haiku builds its x86_64 kernel with -fno-omit-frame-pointer",
        sources: &[ARCH_DEBUG_CPP, ARCHITECTURE_RULES],
    },
];

/// The rule named `id`.
pub fn rule(id: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.id == id)
}

/// Why Haiku's kernel loader refuses a file: each with its status, its rule and the message
/// the simulator's loader reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotElf,
    NotClass64,
    NoProgramHeaders,
    ProgramHeaderPastEnd,
    MissingTextOrData,
    NoDynamic,
    /// The reserved span, in bytes.
    Span(u64),
    SegmentPastEnd,
    SegmentSizes,
    DynamicUnmapped,
    MissingHashSymtabStrtab,
    DtRel,
    HashUnmapped,
    SymtabUnmapped,
    /// A symbol found nowhere (its name).
    Unresolved(String),
    /// A symbol found with another ELF type: name, wanted, found.
    WrongType(String, crate::elf::SymKind, crate::elf::SymKind),
    PltNotRela,
    RelocTableUnmapped,
    /// A relocation's symbol index beyond the table: offset, index.
    RelocSymbol(u64, u64),
    /// A type `arch_elf_relocate_rela` does not handle: type, offset.
    UnhandledReloc(u32, u64),
    /// A relocation target outside the mapped regions.
    RelocOutside(u64),
    NoModules,
}

impl Refusal {
    /// The rule it breaks.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::NotElf | Self::NotClass64 | Self::NoProgramHeaders => ELF,
            Self::ProgramHeaderPastEnd | Self::SegmentPastEnd => ELF,
            Self::MissingTextOrData | Self::Span(_) | Self::SegmentSizes => SEGMENTS,
            Self::NoDynamic | Self::DynamicUnmapped | Self::MissingHashSymtabStrtab => DT_HASH,
            Self::HashUnmapped | Self::SymtabUnmapped => DT_HASH,
            Self::DtRel | Self::PltNotRela | Self::RelocTableUnmapped => RELOCATIONS,
            Self::RelocSymbol(..) | Self::UnhandledReloc(..) | Self::RelocOutside(_) => RELOCATIONS,
            Self::Unresolved(_) | Self::WrongType(..) => IMPORTS,
            Self::NoModules => MODULES,
        }
    }

    /// Haiku's status.
    pub fn status(&self) -> i32 {
        match self {
            Self::NotElf | Self::NotClass64 | Self::NoProgramHeaders => hd::B_NOT_AN_EXECUTABLE,
            Self::MissingHashSymtabStrtab | Self::DtRel | Self::PltNotRela => hd::B_ERROR,
            Self::Unresolved(_) | Self::WrongType(..) => hd::B_MISSING_SYMBOL,
            Self::RelocOutside(_) => hd::B_BAD_ADDRESS,
            Self::NoModules => hd::B_BAD_TYPE,
            Self::ProgramHeaderPastEnd
            | Self::MissingTextOrData
            | Self::NoDynamic
            | Self::Span(_)
            | Self::SegmentPastEnd
            | Self::SegmentSizes
            | Self::DynamicUnmapped
            | Self::HashUnmapped
            | Self::SymtabUnmapped
            | Self::RelocTableUnmapped
            | Self::RelocSymbol(..)
            | Self::UnhandledReloc(..) => hd::B_BAD_DATA,
        }
    }
}

/// The simulator's loader names a symbol's ELF type as it always has (`Func`, `Object`,
/// `Other(n)` with the raw `st_type`).
fn loader_kind(k: crate::elf::SymKind) -> String {
    use crate::elf::SymKind;
    match k {
        SymKind::Func => "Func".into(),
        SymKind::Object => "Object".into(),
        SymKind::NoType => format!("Other({})", elf::STT_NOTYPE),
        SymKind::Other(t) => format!("Other({t})"),
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotElf => f.write_str("not an ELF file"),
            Self::NotClass64 => f.write_str("not ELFCLASS64"),
            Self::NoProgramHeaders => f.write_str("no usable program headers"),
            Self::ProgramHeaderPastEnd => f.write_str("program header past the end of the file"),
            Self::MissingTextOrData => f.write_str("missing text or data segment"),
            Self::NoDynamic => f.write_str("no PT_DYNAMIC"),
            Self::Span(reserved) => write!(
                f,
                "the segments span {reserved:#x} bytes, more than their pages plus 8 KiB"
            ),
            Self::SegmentPastEnd => f.write_str("segment past the end of the file"),
            Self::SegmentSizes => f.write_str("segment sizes are inconsistent"),
            Self::DynamicUnmapped => f.write_str("dynamic section is not mapped or not terminated"),
            Self::MissingHashSymtabStrtab => f.write_str("missing DT_HASH, DT_SYMTAB or DT_STRTAB"),
            Self::DtRel => f.write_str("DT_REL relocations are not supported on x86_64"),
            Self::HashUnmapped => f.write_str("DT_HASH is not mapped"),
            Self::SymtabUnmapped => f.write_str("symbol table is not mapped"),
            Self::Unresolved(name) => write!(f, "could not resolve symbol `{name}`"),
            Self::WrongType(name, wanted, found) => write!(
                f,
                "symbol `{name}`: wrong type ({} wanted, {} found)",
                loader_kind(*wanted),
                loader_kind(*found)
            ),
            Self::PltNotRela => f.write_str("PLT relocations are not RELA"),
            Self::RelocTableUnmapped => f.write_str("relocation table is not mapped"),
            Self::RelocSymbol(offset, index) => write!(
                f,
                "relocation at {offset:#x} names symbol {index} past the table"
            ),
            Self::UnhandledReloc(t, offset) => {
                write!(f, "unhandled relocation type {t} at {offset:#x}")
            }
            Self::RelocOutside(offset) => {
                write!(f, "relocation target {offset:#x} is outside the image")
            }
            Self::NoModules => f.write_str("the add-on exports no `modules`"),
        }
    }
}

/// What Haiku's loader prints about a file it loads anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    SecondData,
    SecondText,
    /// A PT_LOAD neither writable nor executable: flags, vaddr.
    WeirdFlags(u32, u64),
    UnhandledProgramHeader(u32),
    RelrSkipped,
    /// A DT_INIT, DT_FINI, DT_INIT_ARRAY or DT_FINI_ARRAY tag.
    NeverRun(u64),
}

impl Note {
    /// The rule whose breach it is.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::SecondData | Self::SecondText | Self::WeirdFlags(..) => SEGMENTS,
            Self::UnhandledProgramHeader(elf::PT_TLS) => TLS,
            Self::UnhandledProgramHeader(_) => SEGMENTS,
            Self::RelrSkipped => RELOCATIONS,
            Self::NeverRun(_) => INITIALIZERS,
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecondData => f.write_str("second data segment ignored"),
            Self::SecondText => f.write_str("second text segment ignored"),
            Self::WeirdFlags(flags, vaddr) => write!(
                f,
                "weird program header flags {flags:#x}: segment at {vaddr:#x} not mapped"
            ),
            Self::UnhandledProgramHeader(t) => write!(f, "unhandled pheader type {t:#x}"),
            Self::RelrSkipped => {
                f.write_str("DT_RELR is not parsed by Haiku: its relocations are silently skipped")
            }
            Self::NeverRun(tag) => write!(
                f,
                "dynamic tag {tag} (an initialiser or finaliser) is never run"
            ),
        }
    }
}

/// How `arch_elf_relocate_rela` applies a relocation type it handles (S: the symbol's
/// value, A: the addend, B: the image's base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Apply {
    /// R_X86_64_NONE: nothing.
    None,
    /// R_X86_64_64: S + A, 8 bytes.
    Absolute,
    /// R_X86_64_PC32: S + A - r_offset, 4 bytes. Haiku subtracts the offset, not the
    /// place's address (P = B + r_offset): reproduced, not fixed.
    Pc32,
    /// R_X86_64_GLOB_DAT and R_X86_64_JUMP_SLOT: S, 8 bytes.
    Symbol,
    /// R_X86_64_RELATIVE: B + A, 8 bytes.
    Relative,
}

impl Apply {
    /// The bytes written.
    pub fn width(self) -> u64 {
        match self {
            Self::Pc32 => 4,
            Self::None => 0,
            _ => 8,
        }
    }
}

/// One dynamic relocation type: what Haiku does with it and what we require.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloc {
    /// Haiku applies it so, or (`None`) refuses the add-on ("unhandled relocation type",
    /// B_BAD_DATA).
    pub haiku: Option<Apply>,
    /// Why the audit refuses it; `None`: accepted.
    pub refused: Option<&'static str>,
}

/// The relocation table, for every x86-64 type.
pub fn reloc(t: u32) -> Reloc {
    let haiku = match t {
        elf::R_X86_64_NONE => Some(Apply::None),
        elf::R_X86_64_64 => Some(Apply::Absolute),
        elf::R_X86_64_PC32 => Some(Apply::Pc32),
        elf::R_X86_64_GLOB_DAT | elf::R_X86_64_JUMP_SLOT => Some(Apply::Symbol),
        elf::R_X86_64_RELATIVE => Some(Apply::Relative),
        _ => None,
    };
    let refused = match t {
        elf::R_X86_64_NONE
        | elf::R_X86_64_64
        | elf::R_X86_64_GLOB_DAT
        | elf::R_X86_64_JUMP_SLOT
        | elf::R_X86_64_RELATIVE => None,
        // Haiku applies it, with its own formula: we refuse it.
        elf::R_X86_64_PC32 => Some(
            "Haiku applies a dynamic PC32 as S+A-offset (wrong), and the kernel is more than \
             2 GiB away from any add-on; build everything -fPIC",
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
            "an ifunc relocation; Haiku does not handle it (\"unhandled relocation type\", \
             B_BAD_DATA)",
        ),
        elf::R_X86_64_COPY => Some(
            "a copy relocation; Haiku does not handle it (\"unhandled relocation type\", \
             B_BAD_DATA)",
        ),
        _ => Some("Haiku does not handle it (\"unhandled relocation type\", B_BAD_DATA)"),
    };
    Reloc { haiku, refused }
}

/// `R_X86_64_<name>` of a relocation type.
pub fn reloc_name(t: u32) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::SymKind;

    fn status_name(status: i32) -> &'static str {
        hd::STATUS
            .iter()
            .find(|c| c.value == status)
            .map_or("?", |c| c.name)
    }

    #[test]
    fn the_rules_are_the_audits_in_its_order() {
        let ids: Vec<_> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [
                "elf",
                "dt-hash",
                "segments",
                "relocations",
                "tls",
                "initializers",
                "imports",
                "modules",
                "red-zone",
                "frame-pointer"
            ]
        );
        for r in &RULES {
            assert!(!r.sources.is_empty(), "{}", r.id);
            assert!(r
                .sources
                .iter()
                .all(|s| s.starts_with("src/") || s.starts_with("build/")));
        }
    }

    /// Each refusal with the status Haiku returns for it (src/system/kernel/elf.cpp,
    /// arch/x86/arch_elf.cpp, module.cpp) and its rule.
    #[test]
    fn every_refusal_has_haikus_status_and_a_rule() {
        let f = SymKind::Func;
        let table: [(Refusal, &str, &str); 22] = [
            (Refusal::NotElf, "B_NOT_AN_EXECUTABLE", "elf"),
            (Refusal::NotClass64, "B_NOT_AN_EXECUTABLE", "elf"),
            (Refusal::NoProgramHeaders, "B_NOT_AN_EXECUTABLE", "elf"),
            (Refusal::ProgramHeaderPastEnd, "B_BAD_DATA", "elf"),
            (Refusal::SegmentPastEnd, "B_BAD_DATA", "elf"),
            (Refusal::MissingTextOrData, "B_BAD_DATA", "segments"),
            (Refusal::Span(0x20000), "B_BAD_DATA", "segments"),
            (Refusal::SegmentSizes, "B_BAD_DATA", "segments"),
            (Refusal::NoDynamic, "B_BAD_DATA", "dt-hash"),
            (Refusal::DynamicUnmapped, "B_BAD_DATA", "dt-hash"),
            (Refusal::MissingHashSymtabStrtab, "B_ERROR", "dt-hash"),
            (Refusal::HashUnmapped, "B_BAD_DATA", "dt-hash"),
            (Refusal::SymtabUnmapped, "B_BAD_DATA", "dt-hash"),
            (Refusal::DtRel, "B_ERROR", "relocations"),
            (Refusal::PltNotRela, "B_ERROR", "relocations"),
            (Refusal::RelocTableUnmapped, "B_BAD_DATA", "relocations"),
            (Refusal::RelocSymbol(0x10, 99), "B_BAD_DATA", "relocations"),
            (
                Refusal::UnhandledReloc(37, 0x10),
                "B_BAD_DATA",
                "relocations",
            ),
            (
                Refusal::RelocOutside(0x900000),
                "B_BAD_ADDRESS",
                "relocations",
            ),
            (
                Refusal::Unresolved("x".into()),
                "B_MISSING_SYMBOL",
                "imports",
            ),
            (
                Refusal::WrongType("x".into(), SymKind::NoType, f),
                "B_MISSING_SYMBOL",
                "imports",
            ),
            (Refusal::NoModules, "B_BAD_TYPE", "modules"),
        ];
        for (r, status, id) in table {
            assert_eq!(status_name(r.status()), status, "{r}");
            assert_eq!(r.rule(), id, "{r}");
            assert!(rule(id).is_some());
        }
    }

    #[test]
    fn refusals_read_as_the_simulator_reports_them() {
        assert_eq!(
            Refusal::UnhandledReloc(18, 0x13f8).to_string(),
            "unhandled relocation type 18 at 0x13f8"
        );
        assert_eq!(
            Refusal::WrongType("dprintf".into(), SymKind::NoType, SymKind::Func).to_string(),
            "symbol `dprintf`: wrong type (Other(0) wanted, Func found)"
        );
        assert_eq!(
            Refusal::Span(0x11000).to_string(),
            "the segments span 0x11000 bytes, more than their pages plus 8 KiB"
        );
        assert_eq!(
            Note::WeirdFlags(4, 0x1000).to_string(),
            "weird program header flags 0x4: segment at 0x1000 not mapped"
        );
        assert_eq!(Note::UnhandledProgramHeader(elf::PT_TLS).rule(), TLS);
    }

    /// arch_elf_relocate_rela's cases for x86_64, and the audit's stricter line: PC32 is
    /// applied by Haiku (with its own formula) but refused by the audit.
    #[test]
    fn the_relocation_table() {
        let handled = [
            (0, Apply::None),
            (1, Apply::Absolute),
            (2, Apply::Pc32),
            (6, Apply::Symbol),
            (7, Apply::Symbol),
            (8, Apply::Relative),
        ];
        for (t, how) in handled {
            assert_eq!(reloc(t).haiku, Some(how), "{}", reloc_name(t));
            assert_eq!(reloc(t).refused.is_some(), t == 2, "{}", reloc_name(t));
        }
        // COPY, TPOFF64, DTPMOD64, IRELATIVE, RELATIVE64, GOTPCREL: refused by both.
        for t in [5, 18, 16, 37, 38, 9] {
            assert_eq!(reloc(t).haiku, None, "{}", reloc_name(t));
            assert!(reloc(t).refused.is_some(), "{}", reloc_name(t));
        }
        assert_eq!(reloc_name(18), "R_X86_64_TPOFF64");
        assert_eq!(reloc_name(200), "R_X86_64_<200>");
        assert_eq!(Apply::Pc32.width(), 4);
        assert_eq!(Apply::Absolute.width(), 8);
    }
}
