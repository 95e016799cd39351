//! `cargo xtask build-haiku`: the add-on a Haiku user installs, its install tree and its
//! package ([`crate::package`]).
//!
//! Stable Rust has no Haiku kernel target, so the driver is built for the host target as a
//! `no_std` cdylib with the code-generation and link flags that make a file Haiku's kernel
//! loader accepts ([`haiku_elf::build`]: one R+X and one R+W PT_LOAD, DT_HASH, PIC, as
//! `load_kernel_add_on` in Haiku's src/system/kernel/elf.cpp and `arch_elf_relocate_rela`
//! in src/system/kernel/arch/x86/arch_elf.cpp require), linked against a stub
//! `kernel_x86_64` generated from the kernel import table so every import carries its ELF
//! type. The audit then checks every loader rule on the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, gen, root, Result};

/// Where the build puts things, relative to the workspace root.
pub const OUT_DIR: &str = "target/haiku";
/// The add-on's file name (the module path walks to this file).
pub const ADDON: &str = "virtio_sound";
/// Where the add-on goes in a Haiku guest, under /boot.
pub const INSTALL_ADDON: &str =
    "system/non-packaged/add-ons/kernel/drivers/audio/hmulti/virtio_sound";
/// Where the driver settings file goes, under /boot.
pub const INSTALL_SETTINGS: &str = "home/config/settings/kernel/drivers/virtio_sound";

/// The example settings file installed beside the add-on.
pub const EXAMPLE_SETTINGS: &str = "\
# virtio_sound driver settings (copy to /boot/home/config/settings/kernel/drivers/virtio_sound)
# Frames per hmulti buffer; 0 picks about 10 ms at the current rate.
frames_per_buffer 0
# Buffers per direction, 2..32; 0 picks 4.
buffer_count 0
# Highest sample rate to advertise, in Hz; 0 advertises every rate the device offers.
max_rate 0
# Log level: 0 errors, 1 warnings, 2 info, 3 debug, 4 trace.
log_level 2
# Least silence played after the last buffer when playback stops, in ms (0..1000), so that
# what the device still holds is heard (more if the device holds more; 0 plays none).
stop_padding_ms 20
";

const TARGET: &str = "x86_64-unknown-linux-gnu";

fn run(name: &str, cmd: &mut Command) -> Result {
    let out = cmd
        .output()
        .map_err(|e| format!("{name}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{name} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// A sibling temporary name for `path`, unique to this process.
fn tmp_for(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".tmp{}", std::process::id()));
    PathBuf::from(s)
}

/// Moves a finished temporary into place. Builds may run concurrently (tests start several
/// `cargo xtask` processes): a reader sees the old file or the new one, never half of one.
fn publish(tmp: &Path, path: &Path) -> Result {
    std::fs::rename(tmp, path).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result {
    let t = tmp_for(path);
    std::fs::write(&t, bytes)?;
    publish(&t, path)
}

fn copy_atomic(from: &Path, to: &Path) -> Result {
    let t = tmp_for(to);
    std::fs::copy(from, &t)?;
    publish(&t, to)
}

/// Compiles the stub kernel from the import table: `libkernel_x86_64.so`.
pub fn build_stub(dir: &Path) -> Result<PathBuf> {
    let specs = gen::load_all()?;
    let files = gen::outputs(&specs)?;
    let src = files
        .get(Path::new("spec/generated/kernel_stub.c"))
        .ok_or("no kernel stub source")?;
    std::fs::create_dir_all(dir)?;
    let c = dir.join("kernel_stub.c");
    write_atomic(&c, src.as_bytes())?;
    let so = dir.join("libkernel_x86_64.so");
    let so_tmp = tmp_for(&so);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    run(
        "compiling the kernel stub",
        Command::new(cc)
            .args(haiku_elf::build::KERNEL_STUB)
            .arg("-o")
            .arg(&so_tmp)
            .arg(&c),
    )?;
    publish(&so_tmp, &so)?;
    Ok(so)
}

/// How to build the add-on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Variant {
    /// `-C overflow-checks=on`: an arithmetic overflow panics (a kernel panic) instead of
    /// wrapping. For the tests that prove no number a device supplies overflows: built under
    /// [`CHECKED_DIR`], never over the add-on a user installs, and without an install tree.
    pub overflow_checks: bool,
}

/// Where the overflow-checked add-on goes, relative to the workspace root.
pub const CHECKED_DIR: &str = "target/haiku/overflow-checks";

/// The flags that make a host-target cdylib loadable by Haiku's kernel
/// ([`haiku_elf::build`], where each is explained), plus frame pointers: Haiku builds x86_64
/// kernel code with `-fno-omit-frame-pointer` because its kernel debugger walks stacks
/// through rbp, and a function that uses rbp as a general register breaks every backtrace
/// taken below it.
pub fn rustflags(stub_dir: &Path, variant: Variant) -> String {
    let mut flags = Vec::new();
    for c in haiku_elf::build::RUSTC_CODEGEN {
        flags.push("-C".to_string());
        flags.push(c.into());
    }
    if variant.overflow_checks {
        flags.push("-C".into());
        flags.push("overflow-checks=on".into());
    }
    for l in haiku_elf::build::rustc_link_args() {
        flags.push("-C".into());
        flags.push(format!("link-arg={l}"));
    }
    flags.push("-C".into());
    flags.push(format!("link-arg=-L{}", stub_dir.display()));
    flags.push("-C".into());
    flags.push("link-arg=-lkernel_x86_64".into());
    flags.join("\x1f")
}

/// Builds and strips the add-on under `out` with the rustflags `flags` gives for a stub
/// directory; returns the unstripped copy (`ADDON.debug`) and the add-on (`ADDON`).
fn compile(out: &Path, flags: impl Fn(&Path) -> String) -> Result<(PathBuf, PathBuf)> {
    let stub_dir = out.join("stub");
    build_stub(&stub_dir)?;
    eprintln!("==> building the add-on (no_std cdylib for {TARGET})");
    let status = cargo()
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", flags(&stub_dir))
        .args([
            "rustc",
            "-q",
            "-p",
            "virtio-sound-addon",
            "--lib",
            "--release",
            "--crate-type",
            "cdylib",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(out.join("build"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the add-on failed (see above)".into());
    }
    let built = out
        .join("build")
        .join(TARGET)
        .join("release/libvirtio_sound.so");
    let unstripped = out.join(format!("{ADDON}.debug"));
    copy_atomic(&built, &unstripped)?;
    let addon = out.join(ADDON);
    let stripped = tmp_for(&addon);
    run(
        "strip",
        Command::new("strip")
            .args(["--strip-unneeded", "-o"])
            .arg(&stripped)
            .arg(&built),
    )?;
    publish(&stripped, &addon)?;
    Ok((unstripped, addon))
}

/// Builds, strips and audits the add-on; lays out the install tree. Returns the add-on path.
pub fn build() -> Result<PathBuf> {
    build_variant(Variant::default())
}

/// [`build`], or a test variant of the add-on in its own directory.
pub fn build_variant(variant: Variant) -> Result<PathBuf> {
    let root = root();
    let out = if variant == Variant::default() {
        root.join(OUT_DIR)
    } else {
        root.join(CHECKED_DIR)
    };
    let checks = if variant.overflow_checks {
        " (overflow checks on)"
    } else {
        ""
    };
    let (unstripped, addon) = compile(&out, |stub| rustflags(stub, variant))?;
    eprintln!("==> auditing {}{checks}", addon.display());
    let report = crate::audit::check(&addon)?;
    if variant != Variant::default() {
        println!("{report}\nadd-on for tests{checks}: {}", addon.display());
        return Ok(addon);
    }
    let install = out.join("install");
    let dest = install.join(INSTALL_ADDON);
    std::fs::create_dir_all(dest.parent().ok_or("install path")?)?;
    copy_atomic(&addon, &dest)?;
    let settings = install.join(INSTALL_SETTINGS);
    std::fs::create_dir_all(settings.parent().ok_or("install path")?)?;
    write_atomic(&settings, EXAMPLE_SETTINGS.as_bytes())?;
    let size = std::fs::metadata(&addon)?.len();
    println!("{report}");
    // The unstripped copy still has .symtab: name the library code the add-on carries.
    let full = crate::audit::check(&unstripped)?;
    let names: Vec<String> = full
        .functions
        .iter()
        .map(|s| format!("{:#}", rustc_demangle::demangle(&s.name)))
        .collect();
    let lib = |prefix: &str| -> Vec<&String> {
        let mut v: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.starts_with(&format!("{prefix}::")) || n.starts_with(&format!("<{prefix}::"))
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (core_fns, alloc_fns) = (lib("core"), lib("alloc"));
    println!(
        "add-on: {} ({size} bytes stripped, {} defined functions); {} from core, {} from alloc:",
        addon.display(),
        names.len(),
        core_fns.len(),
        alloc_fns.len()
    );
    for n in core_fns.iter().chain(alloc_fns.iter()) {
        println!("  {n}");
    }
    frameless_leaves(&full)?;
    println!(
        "install tree: {} (copy its contents into /boot of the Haiku guest)",
        install.display()
    );
    let package = crate::package::write(&addon, None, &out)?;
    println!(
        "package: {} (or drop it into /boot/system/packages)",
        package.display()
    );
    Ok(addon)
}

/// Prints the frame-pointer finding of the unstripped add-on by name, and fails if one of
/// the frameless leaves the audit accepts is the add-on's own code: built with
/// `-C force-frame-pointers=yes`, it sets up rbp even in leaves, so only the toolchain's
/// precompiled libraries (frame pointers only in functions that call) may lack one.
fn frameless_leaves(full: &crate::audit::Report) -> Result {
    let precompiled = precompiled_functions()?;
    let f = &full.frames;
    let (mut theirs, mut ours) = (Vec::new(), Vec::new());
    for (addr, name) in &f.leaves {
        // An LTO-promoted local gets a `.llvm.<hash>` suffix.
        let known = full
            .functions
            .iter()
            .filter(|s| s.value == *addr)
            .any(|s| precompiled.contains(s.name.split(".llvm.").next().unwrap_or("")));
        let line = format!("{addr:#08x} {name}");
        if known {
            theirs.push(line);
        } else {
            ours.push(line);
        }
    }
    if !ours.is_empty() {
        return Err(format!(
            "{} of the add-on's own functions set up no frame pointer although it is built \
             with -C force-frame-pointers=yes:\n  {}",
            ours.len(),
            ours.join("\n  ")
        )
        .into());
    }
    print!(
        "frame pointers: {} of {} functions set up rbp before any call",
        f.framed, f.functions
    );
    if theirs.is_empty() {
        println!();
    } else {
        println!(
            "; the {} without are leaves of the toolchain's precompiled core/alloc, which \
             keeps frame pointers only in functions that call:",
            theirs.len()
        );
    }
    for l in &theirs {
        println!("  {l}");
    }
    Ok(())
}

/// The functions defined in the toolchain's precompiled `core`, `alloc` and
/// `compiler_builtins` for the add-on's target, by symbol name: the objects in their rlibs.
fn precompiled_functions() -> Result<std::collections::BTreeSet<String>> {
    use object::{Object as _, ObjectSymbol as _};
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("{rustc} --print sysroot: {e}"))?;
    if !out.status.success() {
        return Err(format!("{rustc} --print sysroot failed").into());
    }
    let lib = Path::new(String::from_utf8_lossy(&out.stdout).trim())
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib");
    let mut names = std::collections::BTreeSet::new();
    let mut rlibs = 0;
    for entry in std::fs::read_dir(&lib).map_err(|e| format!("{}: {e}", lib.display()))? {
        let path = entry?.path();
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let wanted = ["libcore-", "liballoc-", "libcompiler_builtins-"]
            .iter()
            .any(|p| file.starts_with(p));
        if !wanted || !file.ends_with(".rlib") {
            continue;
        }
        rlibs += 1;
        let data = std::fs::read(&path)?;
        let archive = object::read::archive::ArchiveFile::parse(&*data)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        for member in archive.members() {
            let member = member.map_err(|e| format!("{}: {e}", path.display()))?;
            let Ok(bytes) = member.data(&*data) else {
                continue;
            };
            // Only the members that are objects (not lib.rmeta).
            let Ok(obj) = object::read::elf::ElfFile64::<object::LittleEndian>::parse(bytes) else {
                continue;
            };
            for sym in obj.symbols() {
                if sym.is_definition() && sym.kind() == object::SymbolKind::Text {
                    names.insert(sym.name()?.to_string());
                }
            }
        }
    }
    if rlibs == 0 {
        return Err(format!("no libcore/liballoc rlib in {}", lib.display()).into());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit;

    /// The add-on built exactly as `build-haiku` builds it, less
    /// `-C force-frame-pointers=yes`: LLVM then keeps other values in rbp and calls without
    /// a frame, and the audit refuses it, naming the functions.
    #[test]
    fn without_force_frame_pointers_the_audit_refuses_the_add_on() {
        let out = root().join("target/haiku-tests/no-frame-pointers");
        let without = |stub: &Path| {
            let flags = rustflags(stub, Variant::default());
            let flags: Vec<&str> = flags.split('\x1f').collect();
            let at = flags
                .windows(2)
                .position(|w| w == ["-C", "force-frame-pointers=yes"])
                .expect("build-haiku forces frame pointers");
            [&flags[..at], &flags[at + 2..]].concat().join("\x1f")
        };
        let (unstripped, addon) = compile(&out, without).unwrap();
        let imports = audit::kernel_imports();
        let refused = |file: &Path| match audit::audit(file, &imports) {
            Ok(r) => panic!("{} was accepted:\n{r}", file.display()),
            Err(v) => v,
        };
        let v = refused(&unstripped);
        let text: String = v.iter().map(|v| format!("  {v}\n")).collect();
        assert!(v.iter().all(|v| v.rule == audit::FRAME_POINTER), "{text}");
        // The driver's hooks call into the rest of the driver and the kernel.
        for name in ["virtio_sound::init_driver", "virtio_sound::open"] {
            assert!(
                v.iter()
                    .any(|v| v.message.starts_with(&format!("`{name}` (0x"))),
                "{name} not named:\n{text}"
            );
        }
        // What `cargo xtask audit FILE` prints.
        let e = audit::check(&unstripped).unwrap_err().to_string();
        assert!(
            e.contains("Haiku's kernel debugger could not walk its stack"),
            "{e}"
        );
        assert!(
            e.contains("[frame-pointer] `virtio_sound::open` (0x"),
            "{e}"
        );
        // Stripped, the same functions are found through PT_GNU_EH_FRAME, by address.
        let s = refused(&addon);
        assert_eq!(s.len(), v.len(), "{text}");
        assert!(s.iter().any(|v| v.message.contains("(no symbol)")));
    }
}
