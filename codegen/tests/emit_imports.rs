//! The kernel import table's two generated forms, for a small spec: the spec crate's
//! `KERNEL_IMPORTS` and `kernel_symbol` types, and the add-on's `extern "C"` block, each
//! compared with Rust written out by hand from the TOML below (both formatted the same way,
//! so layout and trailing commas do not matter).

use std::path::Path;

use codegen::{emit_imports, model};

/// A typedef, a kernel structure, an opaque type and a function-pointer typedef; a function
/// with a typedef result and a `const char *` parameter, a variadic function, a `void`
/// function of no parameters that only one release exports, one with pointer parameters (to a structure, to a pointer,
/// to `size_t`), one taking a function pointer, and a data object. A `<` in the TOML's text
/// is escaped in the Rust docs outside code spans (rustdoc would take it for HTML).
const SPEC: &str = r#"
[abi]
name = "toy_kernel"
title = "Toy kernel"
version = "1"
source = "toy.h"
default_kind = "kernel"
strip_prefix = []

[[typedef]]
name = "sem_id"
type = "i32"
doc = "A semaphore."

[[typedef]]
name = "hook_fn"
type = "fn(ptr<void>) -> i32"
doc = "A callback."

[[struct]]
name = "spinlock"
rust = "Spinlock"
fields = [ { name = "lock", type = "i32" } ]

[[struct]]
name = "device_node"
kind = "opaque"

[[import]]
name = "create_sem"
elf = "FUNC"
returns = "sem_id"
args = [ { name = "count", type = "i32" }, { name = "name", type = "const_ptr<char>" } ]
doc = "Makes a semaphore."

[[import]]
name = "dprintf"
elf = "FUNC"
args = [ { name = "format", type = "const_ptr<char>" } ]
variadic = true
doc = "Logs."
note = "From any context, even <irq>; `ptr<T>` stays."

[[import]]
name = "memory_barrier"
elf = "FUNC"
only_in = "nightly"

[[import]]
name = "lock_it"
elf = "FUNC"
returns = "bool"
args = [ { name = "lock", type = "ptr<spinlock>" }, { name = "out", type = "ptr<ptr<void>>" }, { name = "size", type = "ptr<size_t>" }, { name = "node", type = "const_ptr<device_node>" } ]

[[import]]
name = "call_me"
elf = "FUNC"
returns = "u64"
args = [ { name = "hook", type = "hook_fn" }, { name = "length", type = "size_t" }, { name = "c", type = "char" } ]

[[import]]
name = "guard"
elf = "OBJECT"
type = "i64"
doc = "The canary."
"#;

fn spec() -> model::Spec {
    model::parse(SPEC, Path::new("toy_kernel.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// `text` parsed and formatted, for comparing Rust sources regardless of their layout.
fn tokens(text: &str) -> String {
    let file: syn::File = syn::parse_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    prettyplease::unparse(&file)
}

#[test]
fn the_table_and_the_symbol_types_are_the_tomls() {
    let got = emit_imports::table(&spec()).unwrap().to_string();
    let want = r#"
/// Every kernel symbol an add-on may import (`[[import]]` of `toy_kernel.toml`): its name, ELF type, the one release that exports it if only one does, and signature. The audit refuses any other import, and one only a release exports; the simulator implements exactly these, and offers each only where its release does.
pub const KERNEL_IMPORTS: &[crate::kernel_import::KernelImport] = {
    use crate::kernel_import::{CType, HaikuRelease, KernelImport, Param, Signature, SymbolType};
    &[
        KernelImport {
            name: "create_sem",
            elf: SymbolType::Func,
            only_in: None,
            c: "sem_id create_sem(int32_t count, const char *name)",
            signature: Signature::Func {
                returns: CType::I32,
                params: &[
                    Param { name: "count", c: "int32_t", ty: CType::I32 },
                    Param { name: "name", c: "const char *", ty: CType::const_ptr(&CType::Char) },
                ],
                variadic: false,
            },
        },
        KernelImport {
            name: "dprintf",
            elf: SymbolType::Func,
            only_in: None,
            c: "void dprintf(const char *format, ...)",
            signature: Signature::Func {
                returns: CType::Void,
                params: &[
                    Param { name: "format", c: "const char *", ty: CType::const_ptr(&CType::Char) },
                ],
                variadic: true,
            },
        },
        KernelImport {
            name: "memory_barrier",
            elf: SymbolType::Func,
            only_in: Some(HaikuRelease::Nightly),
            c: "void memory_barrier(void)",
            signature: Signature::Func { returns: CType::Void, params: &[], variadic: false },
        },
        KernelImport {
            name: "lock_it",
            elf: SymbolType::Func,
            only_in: None,
            c: "bool lock_it(spinlock *lock, void **out, size_t *size, const device_node *node)",
            signature: Signature::Func {
                returns: CType::Bool,
                params: &[
                    Param {
                        name: "lock",
                        c: "spinlock *",
                        ty: CType::ptr(&CType::Record { name: "spinlock", size: 4, align: 4 }),
                    },
                    Param { name: "out", c: "void **", ty: CType::ptr(&CType::ptr(&CType::Void)) },
                    Param { name: "size", c: "size_t *", ty: CType::ptr(&CType::U64) },
                    Param {
                        name: "node",
                        c: "const device_node *",
                        ty: CType::const_ptr(&CType::Opaque { name: "device_node" }),
                    },
                ],
                variadic: false,
            },
        },
        KernelImport {
            name: "call_me",
            elf: SymbolType::Func,
            only_in: None,
            c: "uint64_t call_me(hook_fn hook, size_t length, char c)",
            signature: Signature::Func {
                returns: CType::U64,
                params: &[
                    Param {
                        name: "hook",
                        c: "hook_fn",
                        ty: CType::FnPtr {
                            returns: &CType::I32,
                            params: &[CType::ptr(&CType::Void)],
                            variadic: false,
                        },
                    },
                    Param { name: "length", c: "size_t", ty: CType::U64 },
                    Param { name: "c", c: "char", ty: CType::Char },
                ],
                variadic: false,
            },
        },
        KernelImport {
            name: "guard",
            elf: SymbolType::Object,
            only_in: None,
            c: "int64_t guard",
            signature: Signature::Object { ty: CType::I64 },
        },
    ]
};

/// The Rust type of each kernel symbol of [`KERNEL_IMPORTS`]: a function's
/// `unsafe extern "C" fn` pointer type, or a data object's type. An implementation of a
/// symbol is checked against it by the compiler (`sim_create_sem as
/// kernel_symbol::create_sem`).
#[allow(non_camel_case_types)]
pub mod kernel_symbol {
    /// `sem_id create_sem(int32_t count, const char *name)`
    pub type create_sem = unsafe extern "C" fn(count: i32, name: *const ::core::ffi::c_char) -> super::sem_id;
    /// `void dprintf(const char *format, ...)`
    pub type dprintf = unsafe extern "C" fn(format: *const ::core::ffi::c_char, ...);
    /// `void memory_barrier(void)`
    pub type memory_barrier = unsafe extern "C" fn();
    /// `bool lock_it(spinlock *lock, void **out, size_t *size, const device_node *node)`
    pub type lock_it = unsafe extern "C" fn(
        lock: *mut super::Spinlock,
        out: *mut *mut ::core::ffi::c_void,
        size: *mut usize,
        node: *const super::DeviceNode,
    ) -> bool;
    /// `uint64_t call_me(hook_fn hook, size_t length, char c)`
    pub type call_me = unsafe extern "C" fn(hook: super::hook_fn, length: usize, c: ::core::ffi::c_char) -> u64;
    /// `int64_t guard`
    pub type guard = i64;
}
"#;
    assert_eq!(tokens(&got), tokens(want));
}

#[test]
fn the_addons_extern_block_is_the_tomls() {
    let got = emit_imports::extern_block(&[spec()]).unwrap();
    assert!(
        got.lines()
            .take(6)
            .any(|l| l.contains("Generated by `cargo xtask gen`") && l.contains("toy_kernel.toml")),
        "{got}"
    );
    let want = r#"
//! The kernel symbols the add-on may import, declared for Rust.
//!
//! Generated by `cargo xtask gen` from the `[[import]]` table of `toy_kernel.toml`; do not edit by hand.
//! Every declaration is the table's signature; the audit refuses any import not in the table.
use spec::toy_kernel::{DeviceNode, Spinlock, hook_fn, sem_id};
extern "C" {
    /// `sem_id create_sem(int32_t count, const char *name)`
    ///
    /// Makes a semaphore.
    pub fn create_sem(count: i32, name: *const ::core::ffi::c_char) -> sem_id;
    /// `void dprintf(const char *format, ...)`
    ///
    /// Logs.
    ///
    /// From any context, even \<irq>; `ptr<T>` stays.
    pub fn dprintf(format: *const ::core::ffi::c_char, ...);
    /// `void memory_barrier(void)`
    ///
    /// Exported only by the nightly kernel: an add-on that imports it does not load on the other release.
    pub fn memory_barrier();
    /// `bool lock_it(spinlock *lock, void **out, size_t *size, const device_node *node)`
    pub fn lock_it(
        lock: *mut Spinlock,
        out: *mut *mut ::core::ffi::c_void,
        size: *mut usize,
        node: *const DeviceNode,
    ) -> bool;
    /// `uint64_t call_me(hook_fn hook, size_t length, char c)`
    pub fn call_me(hook: hook_fn, length: usize, c: ::core::ffi::c_char) -> u64;
    /// `int64_t guard`
    ///
    /// The canary.
    #[allow(non_upper_case_globals)]
    pub static guard: i64;
}
"#;
    assert_eq!(tokens(&got), tokens(want));
}

#[test]
fn a_spec_without_imports_adds_nothing() {
    let text = SPEC.split("[[import]]").next().unwrap();
    let spec = model::parse(text, Path::new("toy_kernel.toml")).unwrap();
    assert!(emit_imports::table(&spec).unwrap().is_empty());
}

/// C passes an array parameter as a pointer: the table would not say what the call does.
#[test]
fn an_array_parameter_is_refused_with_its_line() {
    let text = format!(
        "{SPEC}\n[[import]]\nname = \"fill\"\nelf = \"FUNC\"\n\
         args = [ {{ name = \"buffer\", type = \"[u8; 4]\" }} ]\n"
    );
    let line = text.lines().position(|l| l.contains("[u8; 4]")).unwrap() + 1;
    let err = model::parse(&text, Path::new("toy_kernel.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("toy_kernel.toml:{line}:"))
            && err.contains("import fill, key args")
            && err.contains("passed as a pointer"),
        "{err}"
    );
}
