//! The types of the kernel import table, [`crate::haiku_driver::KERNEL_IMPORTS`], which
//! `cargo xtask gen` writes from the `[[import]]` entries of `spec/haiku_driver.toml`.
//!
//! A signature is given twice: as the C declaration (what a reader greps for), and typed,
//! with every typedef resolved, so that a program can compare it (the simulator checks its
//! implementations against it, the audit takes the names and ELF types from it).

/// The ELF symbol type of a kernel export. Haiku's loader refuses an import whose type
/// differs from the kernel's symbol (`B_MISSING_SYMBOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymbolType {
    /// `STT_FUNC`: a function.
    Func,
    /// `STT_OBJECT`: a data object.
    Object,
}

/// A Haiku release whose kernel ABI the spec describes (the TOML's `only_in`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HaikuRelease {
    /// R1/beta5 (the r1beta5 branch).
    Beta5,
    /// Nightly (master).
    #[default]
    Nightly,
}

impl HaikuRelease {
    /// Both releases, oldest first.
    pub const ALL: [HaikuRelease; 2] = [HaikuRelease::Beta5, HaikuRelease::Nightly];

    /// The spelling of `only_in` and of the tools' `--haiku` option: `beta5` or `nightly`.
    pub const fn name(self) -> &'static str {
        match self {
            HaikuRelease::Beta5 => "beta5",
            HaikuRelease::Nightly => "nightly",
        }
    }

    /// The release spelled `name` (as [`HaikuRelease::name`] spells it).
    pub fn from_name(name: &str) -> Option<HaikuRelease> {
        HaikuRelease::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// One kernel symbol an add-on may import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelImport {
    /// The symbol's name, which is its C name.
    pub name: &'static str,
    /// Its ELF symbol type.
    pub elf: SymbolType,
    /// The one release whose kernel exports it (`only_in`); `None` when both do.
    pub only_in: Option<HaikuRelease>,
    /// The C declaration, e.g. `sem_id create_sem(int32_t count, const char *name)`.
    pub c: &'static str,
    /// The typed signature.
    pub signature: Signature,
}

impl KernelImport {
    /// Whether `release`'s kernel exports the symbol.
    pub fn exported_by(&self, release: HaikuRelease) -> bool {
        self.only_in.is_none_or(|r| r == release)
    }
}

/// What a kernel symbol is, typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signature {
    /// A function: its result ([`CType::Void`] for none), its parameters in order, and
    /// whether it takes more after them (`...`).
    Func {
        returns: CType,
        params: &'static [Param],
        variadic: bool,
    },
    /// A data object of this type.
    Object { ty: CType },
}

/// One parameter of a kernel function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// The parameter's name in the spec (the header's name).
    pub name: &'static str,
    /// Its C type as written, typedef names kept (`sem_id`, `const char *`).
    pub c: &'static str,
    /// Its type with typedefs resolved.
    pub ty: CType,
}

/// A C type on x86_64 (LP64), typedefs resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CType {
    /// `void`: a function's missing result, or what a `void *` points to.
    Void,
    /// An integer of `bits` bits (`size_t` is an unsigned 64-bit integer).
    Int { bits: u8, signed: bool },
    /// C `char` (signed on x86_64).
    Char,
    /// C `bool`, one byte.
    Bool,
    /// `float` (32) or `double` (64).
    Float { bits: u8 },
    /// A data pointer; `constant` for a pointer to `const`.
    Ptr {
        constant: bool,
        pointee: &'static CType,
    },
    /// A function pointer (which may be NULL).
    FnPtr {
        returns: &'static CType,
        params: &'static [CType],
        variadic: bool,
    },
    /// A fixed array.
    Array { element: &'static CType, len: u64 },
    /// A structure or union of the spec, by its C name, with its size and alignment.
    Record {
        name: &'static str,
        size: u64,
        align: u64,
    },
    /// A type only ever seen behind a pointer (`device_node`).
    Opaque { name: &'static str },
}

impl CType {
    pub const I8: CType = CType::Int {
        bits: 8,
        signed: true,
    };
    pub const I16: CType = CType::Int {
        bits: 16,
        signed: true,
    };
    pub const I32: CType = CType::Int {
        bits: 32,
        signed: true,
    };
    pub const I64: CType = CType::Int {
        bits: 64,
        signed: true,
    };
    pub const U8: CType = CType::Int {
        bits: 8,
        signed: false,
    };
    pub const U16: CType = CType::Int {
        bits: 16,
        signed: false,
    };
    pub const U32: CType = CType::Int {
        bits: 32,
        signed: false,
    };
    pub const U64: CType = CType::Int {
        bits: 64,
        signed: false,
    };

    /// `T *`.
    pub const fn ptr(pointee: &'static CType) -> CType {
        CType::Ptr {
            constant: false,
            pointee,
        }
    }

    /// `const T *`.
    pub const fn const_ptr(pointee: &'static CType) -> CType {
        CType::Ptr {
            constant: true,
            pointee,
        }
    }
}
