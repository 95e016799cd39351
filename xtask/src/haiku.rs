//! `cargo xtask build-haiku`: the add-on a Haiku user installs.
//!
//! Stable Rust has no Haiku kernel target, so the driver is built for the host target as a
//! `no_std` cdylib with the code-generation and link flags that make a file Haiku's kernel
//! loader accepts (DESIGN.md §5), linked against a stub `kernel_x86_64` generated from the
//! kernel import table so every import carries its ELF type. The audit then checks every
//! loader rule on the result.

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
            .args([
                "-shared",
                "-nostdlib",
                "-fPIC",
                "-fno-builtin",
                "-Wl,-soname,kernel_x86_64",
                "-o",
            ])
            .arg(&so_tmp)
            .arg(&c),
    )?;
    publish(&so_tmp, &so)?;
    Ok(so)
}

/// The flags that make a host-target cdylib loadable by Haiku's kernel (DESIGN.md §5), plus
/// frame pointers: Haiku builds x86_64 kernel code with `-fno-omit-frame-pointer` because its
/// kernel debugger walks stacks through rbp, and a function that uses rbp as a general
/// register breaks every backtrace taken below it.
pub fn rustflags(stub_dir: &Path) -> String {
    let link = [
        "-nostdlib",
        "-Wl,--hash-style=sysv",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,-z,noseparate-code",
        "-Wl,-z,norelro",
        "-Wl,--no-rosegment",
        "-Wl,--build-id=none",
        "-Wl,-Bsymbolic",
        "-Wl,-soname,virtio_sound",
    ];
    let mut flags = vec![
        "-C".to_string(),
        "no-redzone=yes".into(),
        "-C".into(),
        "force-frame-pointers=yes".into(),
        "-C".into(),
        "relocation-model=pic".into(),
        "-C".into(),
        "relro-level=off".into(),
        "-C".into(),
        "panic=abort".into(),
    ];
    for l in link {
        flags.push("-C".into());
        flags.push(format!("link-arg={l}"));
    }
    flags.push("-C".into());
    flags.push(format!("link-arg=-L{}", stub_dir.display()));
    flags.push("-C".into());
    flags.push("link-arg=-lkernel_x86_64".into());
    flags.join("\x1f")
}

/// Builds, strips and audits the add-on; lays out the install tree. Returns the add-on path.
pub fn build() -> Result<PathBuf> {
    let root = root();
    let out = root.join(OUT_DIR);
    let stub_dir = out.join("stub");
    build_stub(&stub_dir)?;
    eprintln!("==> building the add-on (no_std cdylib for {TARGET})");
    let status = cargo()
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags(&stub_dir))
        .args([
            "rustc",
            "-q",
            "-p",
            "driver",
            "--lib",
            "--release",
            "--features",
            "haiku",
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
    let built = out.join("build").join(TARGET).join("release/libdriver.so");
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
    eprintln!("==> auditing {}", addon.display());
    let report = crate::audit::check(&addon)?;
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
    println!(
        "install tree: {} (copy its contents into /boot of the Haiku guest)",
        install.display()
    );
    Ok(addon)
}
