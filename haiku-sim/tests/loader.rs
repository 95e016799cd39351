//! The loader accepts what Haiku's kernel add-on loader accepts and refuses, with Haiku's
//! status and reason, what it refuses. Fixtures are built here from tiny C sources.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use haiku_elf::build;
use haiku_sim::loader::{self, KernelSymbol, SymbolKind};
use spec::haiku_driver as hd;

extern "C" fn fake_func() -> i32 {
    42
}
static FAKE_OBJECT: i64 = 7;

fn kernel() -> HashMap<String, KernelSymbol> {
    let mut k = HashMap::new();
    for f in ["create_sem", "dprintf", "not_a_kernel_function"] {
        k.insert(
            f.to_string(),
            KernelSymbol {
                addr: fake_func as *const () as u64,
                kind: SymbolKind::Func,
            },
        );
    }
    k.insert(
        "__stack_chk_guard".into(),
        KernelSymbol {
            addr: &FAKE_OBJECT as *const i64 as u64,
            kind: SymbolKind::Object,
        },
    );
    k
}

const STUB: &str = "void create_sem(void) {}\nvoid dprintf(void) {}\nvoid not_a_kernel_function(void) {}\nlong __stack_chk_guard;\n";

const GOOD: &str = r#"
extern int create_sem(int, const char*);
typedef struct { const char* name; unsigned flags; void* std_ops; } module_info;
static module_info m = { "drivers/test/driver_v1", 0, 0 };
module_info* modules[] = { &m, 0 };
int probe(void) { return create_sem(1, "x"); }
"#;

/// The add-on's flags for the C compiler and GNU ld, optimised as C usually is.
fn good_flags() -> Vec<&'static str> {
    let mut flags = build::c_addon();
    flags.push("-O2");
    flags
}

fn build(dir: &Path, name: &str, src: &str, flags: &[&str], stub: &str) -> PathBuf {
    let stub_c = dir.join(format!("{name}_stub.c"));
    std::fs::write(&stub_c, stub).unwrap();
    let st = Command::new("cc")
        .args(build::KERNEL_STUB)
        .arg("-o")
        .arg(dir.join(format!("lib{name}k.so")))
        .arg(&stub_c)
        .status()
        .unwrap();
    assert!(st.success());
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, src).unwrap();
    let out = dir.join(format!("{name}.so"));
    let st = Command::new("cc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&c)
        .arg(format!("-L{}", dir.display()))
        .arg(format!("-l{name}k"))
        .status()
        .unwrap();
    assert!(st.success(), "building fixture {name}");
    out
}

/// [`good_flags`] with the flag `from` replaced by `to`.
fn replaced(from: &str, to: &'static str) -> Vec<&'static str> {
    let mut flags = good_flags();
    let i = flags
        .iter()
        .position(|f| *f == from)
        .expect("a flag of good_flags()");
    flags[i] = to;
    flags
}

fn refused(path: &Path) -> loader::LoadError {
    loader::load(path, &kernel()).expect_err("must be refused")
}

#[test]
fn accepts_a_good_addon_and_binds_imports() {
    let d = tempfile::tempdir().unwrap();
    let f = build(d.path(), "good", GOOD, &good_flags(), STUB);
    let image = loader::load(&f, &kernel()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!image.modules().is_null());
    let probe = image.symbol("probe").expect("probe");
    // Call into the loaded code: it reaches our fake kernel function through its PLT.
    // SAFETY: `probe` is a function of the fixture just loaded, with this C signature.
    let r = unsafe { std::mem::transmute::<u64, extern "C" fn() -> i32>(probe)() };
    assert_eq!(r, 42);
    // The modules table was relocated: its first entry points at the module name string.
    // SAFETY: `modules` is the fixture's NULL-terminated pointer array.
    let first = unsafe { *image.modules() };
    assert!(!first.is_null() && image.contains(first as u64));
    // SAFETY: as above; `name` points at a NUL-terminated literal inside the image.
    let name = unsafe { std::ffi::CStr::from_ptr((*first).name) };
    assert_eq!(name.to_bytes(), b"drivers/test/driver_v1");
}

#[test]
fn refuses_what_haiku_refuses() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let gnu = replaced("-Wl,--hash-style=sysv", "-Wl,--hash-style=gnu");
    let e = refused(&build(dir, "gnuhash", GOOD, &gnu, STUB));
    assert_eq!(e.status, hd::B_ERROR, "{e}");
    assert!(e.reason.contains("DT_HASH"), "{e}");

    let sep = replaced("-Wl,-z,noseparate-code", "-Wl,-z,separate-code");
    let e = refused(&build(dir, "sep", GOOD, &sep, STUB));
    assert_eq!(
        e.status,
        hd::B_BAD_DATA,
        "a read-only segment is never mapped: {e}"
    );

    let tls = format!("{GOOD}\n__thread int counter;\nint bump(void) {{ return ++counter; }}\n");
    let mut ie = good_flags();
    ie.push("-ftls-model=initial-exec");
    let e = refused(&build(dir, "tls", &tls, &ie, STUB));
    assert_eq!(e.status, hd::B_BAD_DATA, "{e}");
    assert!(e.reason.contains("unhandled relocation type"), "{e}");

    let missing = format!(
        "{GOOD}\nextern void not_in_kernel(void);\nvoid call(void) {{ not_in_kernel(); }}\n"
    );
    let e = refused(&build(
        dir,
        "missing",
        &missing,
        &good_flags(),
        &format!("{STUB}void not_in_kernel(void) {{}}\n"),
    ));
    assert_eq!(e.status, hd::B_MISSING_SYMBOL, "{e}");
    assert!(e.reason.contains("not_in_kernel"), "{e}");

    let wrong = "extern int __stack_chk_guard(void);\ntypedef struct { const char* n; unsigned f; void* s; } mi;\nstatic mi m = {\"x\", 0, 0};\nmi* modules[] = { &m, 0 };\nint g(void) { return __stack_chk_guard(); }\n";
    let e = refused(&build(
        dir,
        "wrongtype",
        wrong,
        &good_flags(),
        "void __stack_chk_guard(void) {}\n",
    ));
    assert_eq!(e.status, hd::B_MISSING_SYMBOL, "{e}");
    assert!(e.reason.contains("wrong type"), "{e}");

    let nomod = "extern int create_sem(int, const char*);\nint probe(void) { return create_sem(1, \"x\"); }\n";
    let e = refused(&build(dir, "nomodules", nomod, &good_flags(), STUB));
    assert_eq!(e.status, hd::B_BAD_TYPE, "{e}");

    // A dynamic relocation type Haiku does not handle, made by patching the good fixture.
    let good = build(dir, "patch", GOOD, &good_flags(), STUB);
    let mut bytes = std::fs::read(&good).unwrap();
    let pos = find_relative_reloc(&bytes).expect("a RELATIVE relocation to patch");
    bytes[pos] = 37; // R_X86_64_IRELATIVE
    let e = loader::load_bytes(&bytes, &kernel()).expect_err("IRELATIVE");
    assert_eq!(e.status, hd::B_BAD_DATA, "{e}");

    assert_eq!(
        loader::load_bytes(b"not an elf", &kernel())
            .unwrap_err()
            .status,
        hd::B_NOT_AN_EXECUTABLE
    );
}

#[test]
fn initialisers_and_relr_load_but_are_noted() {
    let d = tempfile::tempdir().unwrap();
    let ctor = format!(
        "{GOOD}\nint ran;\n__attribute__((constructor)) static void init(void) {{ ran = 1; }}\n"
    );
    let image = loader::load(
        &build(d.path(), "ctor", &ctor, &good_flags(), STUB),
        &kernel(),
    )
    .unwrap();
    assert!(
        image.notes.iter().any(|n| n.contains("never run")),
        "{:?}",
        image.notes
    );
    // SAFETY: `ran` is an int in the loaded image's data.
    let ran = unsafe { *(image.symbol("ran").unwrap() as *const i32) };
    assert_eq!(ran, 0, "constructors never run");
}

/// The offset of the type byte of the first R_X86_64_RELATIVE entry in `.rela.dyn`.
fn find_relative_reloc(bytes: &[u8]) -> Option<usize> {
    let shoff = u64::from_le_bytes(bytes[40..48].try_into().ok()?) as usize;
    let shnum = u16::from_le_bytes(bytes[60..62].try_into().ok()?) as usize;
    for i in 0..shnum {
        let sh = shoff + i * 64;
        let ty = u32::from_le_bytes(bytes[sh + 4..sh + 8].try_into().ok()?);
        if ty == 4 {
            let off = u64::from_le_bytes(bytes[sh + 24..sh + 32].try_into().ok()?) as usize;
            let size = u64::from_le_bytes(bytes[sh + 32..sh + 40].try_into().ok()?) as usize;
            for e in (off..off + size).step_by(24) {
                if bytes[e + 8] == 8 {
                    return Some(e + 8);
                }
            }
        }
    }
    None
}
