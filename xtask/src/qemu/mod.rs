//! `cargo xtask qemu`: the built add-on against QEMU's real `virtio-sound-pci` device.
//!
//! The simulator runs inside a small Linux guest: `sim-guest` (the `sim-guest` crate's binary)
//! loads the add-on with Haiku's loader rules and drives it over the PCI device QEMU offers.
//! This file is the host side:
//!
//! - prerequisites: `qemu-system-x86_64` 8.2 or newer with `virtio-sound-pci`;
//! - the guest kernel (Debian's `linux-image-cloud-amd64` from bookworm-backports) and a static
//!   busybox, downloaded with `apt-get download` and extracted once into
//!   `target/qemu/cache/` (or given by `VIRTIO_SOUND_QEMU_KERNEL` / `VIRTIO_SOUND_BUSYBOX`);
//! - `sim-guest`, built statically (static-pie glibc) into `target/qemu/build/`;
//! - an initramfs (a newc cpio archive written here) whose `/init` loads the kernel's UIO
//!   modules (when the kernel came with its module tree), runs `sim-guest` and prints
//!   `@@virtio_sound exit N`;
//! - QEMU, with the serial console captured line by line, a timeout, and the guest's
//!   `@@virtio_sound result {json}` lines collected;
//! - QEMU's wav audio backend as the recording of what the device played.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use hmulti_client::wav::Wav;

use crate::{cargo, root, Result};

/// Where everything of this command lives, relative to the workspace root.
pub const OUT_DIR: &str = "target/qemu";
/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The oldest QEMU with `virtio-sound-pci`.
pub const MIN_QEMU: (u32, u32, u32) = (8, 2, 0);
/// A guest kernel to use instead of the downloaded one (a `vmlinuz`).
pub const KERNEL_ENV: &str = "VIRTIO_SOUND_QEMU_KERNEL";
/// A static busybox to use instead of the downloaded one.
pub const BUSYBOX_ENV: &str = "VIRTIO_SOUND_BUSYBOX";
/// A prebuilt `sim-guest` (static) to use instead of building one.
pub const SIM_GUEST_ENV: &str = "VIRTIO_SOUND_SIM_GUEST";
/// The Debian metapackage the guest kernel comes from, and its suite.
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
pub const BACKPORTS: &str = "bookworm-backports";
/// The Debian package with a static busybox.
pub const BUSYBOX_PKG: &str = "busybox-static";
/// What the guest prints, at the start of a line, before each result (a JSON value)...
pub const RESULT_MARK: &str = "@@virtio_sound result ";
/// ... and as its last line, with `sim-guest`'s exit status.
pub const EXIT_MARK: &str = "@@virtio_sound exit ";
/// The add-on's path in the guest.
pub const GUEST_ADDON: &str = "/virtio_sound";
/// The input WAV's path in the guest.
pub const GUEST_INPUT: &str = "/in.wav";

const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Console lines quoted in an error.
const TAIL: usize = 40;

// ---------------------------------------------------------------------------------------
// Prerequisites

/// `qemu-system-x86_64 --version`, or `None` if it cannot be run or says something else.
pub fn qemu_version() -> Option<(u32, u32, u32)> {
    let out = Command::new(QEMU).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
}

/// The version in `QEMU emulator version 10.0.2 (Debian ...)`.
fn parse_qemu_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = word.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The lines a user adds to apt's sources for bookworm-backports: the first stanza of
/// `/etc/apt/sources.list.d/debian.sources` with its suite replaced, when that file exists.
fn backports_stanza() -> String {
    let from_system = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|text| {
            let stanza: Vec<String> = text
                .lines()
                .skip_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
                .take_while(|l| !l.trim().is_empty())
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(|l| {
                    if l.starts_with("Suites:") {
                        format!("Suites: {BACKPORTS}")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            stanza
                .iter()
                .any(|l| l.starts_with("URIs:"))
                .then(|| stanza.join("\n"))
        });
    let stanza = from_system.unwrap_or_else(|| {
        format!(
            "Types: deb\nURIs: <the URIs: of your Debian stanza>\nSuites: {BACKPORTS}\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg"
        )
    });
    let indented: Vec<String> = stanza.lines().map(|l| format!("    {l}")).collect();
    format!(
        "add {BACKPORTS} to apt's sources, e.g. as /etc/apt/sources.list.d/backports.sources \
         (the first stanza of /etc/apt/sources.list.d/debian.sources with another suite):\n\n{}\n\n\
         then run `apt-get update`",
        indented.join("\n")
    )
}

/// `Ok` if QEMU 8.2 or newer with `virtio-sound-pci` is installed; otherwise what is wrong
/// and how to install it on Debian bookworm.
pub fn qemu_usable() -> std::result::Result<(), String> {
    let how = || {
        format!(
            "QEMU {}.{} or newer with virtio-sound-pci is needed. On Debian bookworm, {} \
             and `apt-get install -y -t {BACKPORTS} qemu-system-x86`.",
            MIN_QEMU.0,
            MIN_QEMU.1,
            backports_stanza()
        )
    };
    let Some(v) = qemu_version() else {
        return Err(format!("`{QEMU} --version` does not run. {}", how()));
    };
    if v < MIN_QEMU {
        return Err(format!("{QEMU} is {}.{}.{}. {}", v.0, v.1, v.2, how()));
    }
    let ok = Command::new(QEMU)
        .args(["-device", "virtio-sound-pci,help"])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        return Err(format!(
            "{QEMU} {}.{}.{} has no virtio-sound-pci device. {}",
            v.0,
            v.1,
            v.2,
            how()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The guest kernel and busybox

fn cache_dir() -> PathBuf {
    root().join(OUT_DIR).join("cache")
}

/// Runs a command and returns its standard output, or an error with everything it said.
fn output(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The concrete kernel package `linux-image-cloud-amd64` depends on in bookworm-backports.
pub fn resolve_kernel_package() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", "-t", BACKPORTS, KERNEL_META])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "apt-cache: cannot run: {e}. Without apt, set {KERNEL_ENV} to a Linux \
                 x86_64 bzImage and {BUSYBOX_ENV} to a static busybox"
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let why = if stderr.contains(BACKPORTS) {
            format!("{BACKPORTS} is not among apt's sources. To fetch the guest kernel, ")
        } else {
            "To fetch the guest kernel, ".to_string()
        };
        return Err(format!(
            "apt-cache depends -t {BACKPORTS} {KERNEL_META} failed:\n{stderr}\n{why}{} \
             (or set {KERNEL_ENV} to a Linux x86_64 bzImage)",
            backports_stanza()
        )
        .into());
    }
    parse_depends(&stdout).ok_or_else(|| {
        format!("apt-cache depends {KERNEL_META} names no linux-image package:\n{stdout}").into()
    })
}

fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

/// The file names `apt-get download PKGS` writes, in order (asked without downloading).
fn deb_file_names(pkgs: &[&str], empty_dir: &Path) -> Result<Vec<String>> {
    // --print-uris says nothing about a file that is already in the working directory.
    let what = format!("apt-get download --print-uris {}", pkgs.join(" "));
    let text = output(
        &what,
        Command::new("apt-get")
            .args(["download", "--print-uris"])
            .args(pkgs)
            .current_dir(empty_dir),
    )?;
    // 'URI' FILENAME SIZE HASH, where FILENAME is NAME_VERSION_ARCH.deb
    let files: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|f| f.ends_with(".deb"))
        .collect();
    pkgs.iter()
        .map(|p| {
            files
                .iter()
                .find(|f| f.split('_').next() == Some(p))
                .map(|f| f.to_string())
                .ok_or_else(|| format!("{what} names no .deb of {p}:\n{text}").into())
        })
        .collect()
}

/// The extracted contents of Debian packages `pkgs`, under the cache, keyed by each
/// package's file name (name, version, architecture): only a package not yet there is
/// downloaded. Concurrent callers may both download one; the first rename publishes a
/// complete tree and the others discard theirs.
pub fn debian_packages(pkgs: &[&str]) -> Result<Vec<PathBuf>> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(&cache)
        .map_err(|e| format!("{}: {e}", cache.display()))?;
    let files = deb_file_names(pkgs, work.path())?;
    let dests: Vec<PathBuf> = files
        .iter()
        .map(|f| cache.join(f.trim_end_matches(".deb")))
        .collect();
    let missing: Vec<usize> = (0..pkgs.len()).filter(|&i| !dests[i].is_dir()).collect();
    if missing.is_empty() {
        return Ok(dests);
    }
    let names: Vec<&str> = missing.iter().map(|&i| pkgs[i]).collect();
    let started = Instant::now();
    eprintln!(
        "==> downloading {} into {}",
        names.join(" "),
        cache.display()
    );
    output(
        &format!("apt-get download {}", names.join(" ")),
        Command::new("apt-get")
            .arg("download")
            .args(&names)
            .current_dir(work.path()),
    )?;
    for &i in &missing {
        let deb = work.path().join(&files[i]);
        let tree = work.path().join(format!("root{i}"));
        output(
            &format!("dpkg-deb -x {}", files[i]),
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree),
        )?;
        if let Err(e) = std::fs::rename(&tree, &dests[i]) {
            // Another process published the same package first: use that.
            if !dests[i].is_dir() {
                return Err(format!("{}: {e}", dests[i].display()).into());
            }
        }
    }
    eprintln!(
        "==> {}: downloaded and extracted in {:.1} s",
        names.join(" "),
        started.elapsed().as_secs_f64()
    );
    Ok(dests)
}

/// `boot/vmlinuz-*` of an extracted kernel package.
fn vmlinuz(tree: &Path) -> Result<PathBuf> {
    let boot = tree.join("boot");
    let entries = std::fs::read_dir(&boot).map_err(|e| format!("{}: {e}", boot.display()))?;
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with("vmlinuz-") {
            return Ok(e.path());
        }
    }
    Err(format!("no boot/vmlinuz-* in {}", boot.display()).into())
}

/// The kernel modules `sim-guest` uses, in load order: `uio_pci_generic` hands it the
/// device's INTx interrupt through `/dev/uioN` (without them it polls the used rings).
pub const GUEST_MODULES: [&str; 2] = ["uio", "uio_pci_generic"];
/// Where the guest finds them (`/lib/modules/uio.ko.xz`, ...).
pub const GUEST_MODULE_DIR: &str = "/lib/modules";

/// The [`GUEST_MODULES`] of the kernel package `kernel` (`.../boot/vmlinuz-VERSION`) comes
/// from, from `.../lib/modules/VERSION/kernel/drivers/uio/`: (file name, contents) of each
/// one found, as `NAME.ko.xz` or `NAME.ko`. None for a kernel outside such a tree (a bare
/// `vmlinuz` given by `VIRTIO_SOUND_QEMU_KERNEL`).
pub fn guest_modules(kernel: &Path) -> Vec<(String, Vec<u8>)> {
    let Some(version) = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
    else {
        return Vec::new();
    };
    let Some(tree) = kernel
        .parent()
        .filter(|b| b.file_name().is_some_and(|n| n == "boot"))
        .and_then(Path::parent)
    else {
        return Vec::new();
    };
    let dir = tree
        .join("lib/modules")
        .join(version)
        .join("kernel/drivers/uio");
    let mut found = Vec::new();
    for m in GUEST_MODULES {
        for file in [format!("{m}.ko.xz"), format!("{m}.ko")] {
            if let Ok(data) = std::fs::read(dir.join(&file)) {
                found.push((file, data));
                break;
            }
        }
    }
    found
}

/// `bin/busybox` of the extracted busybox-static.
fn busybox_in(tree: &Path) -> Result<PathBuf> {
    let bb = tree.join("bin/busybox");
    if !bb.is_file() {
        return Err(format!("{BUSYBOX_PKG} has no bin/busybox ({})", bb.display()).into());
    }
    Ok(bb)
}

/// The guest kernel and a static busybox: `$VIRTIO_SOUND_QEMU_KERNEL` and
/// `$VIRTIO_SOUND_BUSYBOX` when set; otherwise `boot/vmlinuz-*` of the package
/// `linux-image-cloud-amd64` depends on in bookworm-backports and `bin/busybox` of Debian's
/// busybox-static, from the cache (downloaded and extracted the first time).
pub fn guest_kernel_and_busybox() -> Result<(PathBuf, PathBuf)> {
    let kernel = std::env::var_os(KERNEL_ENV).map(PathBuf::from);
    let busybox = std::env::var_os(BUSYBOX_ENV).map(PathBuf::from);
    let kernel_pkg = match kernel {
        Some(_) => None,
        None => Some(resolve_kernel_package()?),
    };
    let mut pkgs: Vec<&str> = kernel_pkg.iter().map(String::as_str).collect();
    if busybox.is_none() {
        pkgs.push(BUSYBOX_PKG);
    }
    let trees = if pkgs.is_empty() {
        Vec::new()
    } else {
        debian_packages(&pkgs)?
    };
    let mut trees = trees.iter();
    let kernel = match kernel {
        Some(k) => k,
        None => vmlinuz(trees.next().ok_or("no kernel package")?)?,
    };
    let busybox = match busybox {
        Some(b) => b,
        None => busybox_in(trees.next().ok_or("no busybox package")?)?,
    };
    Ok((kernel, busybox))
}

/// Builds `sim-guest` as a static-pie glibc binary (it runs in the initramfs, with no
/// shared libraries), in its own target directory so the flags do not invalidate the main
/// build. Returns the binary (`$VIRTIO_SOUND_SIM_GUEST`, if set, without building).
pub fn build_sim_guest() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(SIM_GUEST_ENV) {
        return Ok(PathBuf::from(p));
    }
    let dir = root().join(OUT_DIR).join("build");
    eprintln!("==> building sim-guest (static, {TARGET})");
    let status = cargo()
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "sim-guest",
            "--bin",
            "sim-guest",
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(&dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building sim-guest failed (see above)".into());
    }
    Ok(dir.join(TARGET).join("release/sim-guest"))
}

// ---------------------------------------------------------------------------------------
// The initramfs

/// A newc ("070701") cpio archive, the format of Linux's initramfs. Names are stored
/// without the leading `/`; owner root, mtime 0, so the same inputs give the same bytes.
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    pub fn new() -> Cpio {
        Cpio {
            buf: Vec::new(),
            ino: 0,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, nlink: u32, rdev: (u32, u32), data: &[u8]) {
        let name = name.trim_start_matches('/');
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len() as u32,
            0, // devmajor
            0, // devminor
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    /// A directory; `perm` is e.g. 0o755.
    pub fn dir(&mut self, name: &str, perm: u32) -> &mut Cpio {
        self.entry(name, S_IFDIR | perm, 2, (0, 0), &[]);
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> &mut Cpio {
        self.entry(name, S_IFREG | perm, 1, (0, 0), data);
        self
    }

    /// A character device node.
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> &mut Cpio {
        self.entry(name, S_IFCHR | perm, 1, (major, minor), &[]);
        self
    }

    /// The archive, with its `TRAILER!!!`.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[]);
        self.buf
    }
}

impl Default for Cpio {
    fn default() -> Self {
        Cpio::new()
    }
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The guest's `/init`: mount the kernel file systems, load the kernel modules `modules`
/// (file names in [`GUEST_MODULE_DIR`], in order; `.xz` ones are decompressed first; one
/// that does not load is reported and skipped), run `/sim-guest ARGS` with its output on
/// the console, print `@@virtio_sound exit STATUS`, and hand the status to QEMU's exit
/// device (`sim-guest exit STATUS`: QEMU then exits with `2 * STATUS + 1`, and finishes the
/// WAV file as at a clean shutdown); power off if that did not end it.
pub fn init_script(args: &[String], modules: &[String]) -> String {
    let args: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    let mut load = String::new();
    for m in modules {
        let path = shell_quote(&format!("{GUEST_MODULE_DIR}/{m}"));
        let ko = match m.strip_suffix(".xz") {
            Some(plain) => {
                let tmp = shell_quote(&format!("/tmp/{plain}"));
                load.push_str(&format!("unxz -c {path} >{tmp} && "));
                tmp
            }
            None => path,
        };
        load.push_str(&format!(
            "insmod {ko} || echo {} >/dev/console\n",
            shell_quote(&format!("init: {m} not loaded"))
        ));
    }
    format!(
        "#!/bin/busybox sh\n\
         /bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         mount -t hugetlbfs hugetlbfs /mnt/huge\n\
         cd /tmp\n\
         {load}\
         /sim-guest {} >/dev/console 2>&1 </dev/null\n\
         status=$?\n\
         echo \"{EXIT_MARK}$status\" >/dev/console\n\
         /sim-guest exit $status\n\
         echo o > /proc/sysrq-trigger\n\
         sleep 10\n",
        args.join(" ")
    )
}

/// The initramfs: busybox, `/init`, `/sim-guest`, the add-on as `/virtio_sound`, the kernel
/// modules `modules` (file name, contents) in [`GUEST_MODULE_DIR`], loaded by `/init` in
/// this order, and `files` (guest path, contents; mode 0644; missing parent directories are
/// created, and a file replaces a fixed entry of the same path).
pub fn initramfs(
    busybox: &[u8],
    runner: &[u8],
    addon: &[u8],
    modules: &[(String, Vec<u8>)],
    args: &[String],
    files: &[(String, Vec<u8>)],
) -> Vec<u8> {
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    let init = init_script(args, &names);
    let norm = |p: &str| p.trim_start_matches('/').to_string();
    let mut dirs: Vec<String> = ["bin", "dev", "proc", "sys", "tmp", "mnt", "mnt/huge"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let module_files: Vec<(String, &[u8])> = modules
        .iter()
        .map(|(n, d)| (format!("{GUEST_MODULE_DIR}/{n}"), d.as_slice()))
        .collect();
    let paths = module_files
        .iter()
        .map(|(p, _)| p)
        .chain(files.iter().map(|(p, _)| p));
    for path in paths {
        let p = norm(path);
        let mut at = 0;
        while let Some(i) = p[at..].find('/') {
            let d = p[..at + i].to_string();
            if !dirs.contains(&d) {
                dirs.push(d);
            }
            at += i + 1;
        }
    }
    let mut fixed: Vec<(String, u32, &[u8])> = vec![
        ("bin/busybox".into(), 0o755, busybox),
        ("init".into(), 0o755, init.as_bytes()),
        ("sim-guest".into(), 0o755, runner),
        (norm(GUEST_ADDON), 0o644, addon),
    ];
    fixed.extend(module_files.iter().map(|(p, d)| (norm(p), 0o644, *d)));
    fixed.retain(|(name, _, _)| !files.iter().any(|(p, _)| norm(p) == *name));
    let mut c = Cpio::new();
    for d in &dirs {
        c.dir(d, 0o755);
    }
    // The kernel gives /init /dev/console as its standard streams: make sure it exists
    // before devtmpfs is mounted.
    c.char_dev("dev/console", 0o600, 5, 1);
    for (name, perm, data) in fixed {
        c.file(&name, perm, data);
    }
    for (path, data) in files {
        c.file(&norm(path), 0o644, data);
    }
    c.finish()
}

// ---------------------------------------------------------------------------------------
// Running QEMU

/// QEMU's audio backend for the sound device.
#[derive(Debug, Clone)]
pub enum Audiodev {
    /// Writes what the device plays to a WAV file: 16-bit, `channels` channels at
    /// `frequency` Hz (QEMU mixes and converts the guest's stream to that).
    Wav {
        path: PathBuf,
        frequency: u32,
        channels: u16,
    },
    /// Discards the output; input is silence. `frequency`: the stream's rate (sets the
    /// audio timer, see [`timer_period_us`]).
    None { frequency: u32 },
}

/// QEMU's audio timer period for a stream at `hz`. Each tick of QEMU's mixing engine moves
/// at most one backend buffer (1024 frames for the wav and none backends), so the default
/// 10 ms tick caps a stream at about 102 kHz: above that the device consumes too slowly
/// (a 192 kHz stream plays at half speed). Ticks are shortened so that one carries at most
/// 512 frames.
pub fn timer_period_us(hz: u32) -> u32 {
    (512_000_000 / hz.max(1)).clamp(1000, 10_000)
}

impl Audiodev {
    /// The `-audiodev` option.
    pub fn option(&self) -> String {
        match self {
            Audiodev::Wav {
                path,
                frequency,
                channels,
            } => format!(
                "wav,id=snd0,path={},out.frequency={frequency},out.channels={channels},\
                 out.format=s16,out.fixed-settings=on,timer-period={}",
                // QEMU runs in its run directory; its option syntax doubles a comma.
                std::path::absolute(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string()
                    .replace(',', ",,"),
                timer_period_us(*frequency)
            ),
            Audiodev::None { frequency } => {
                format!("none,id=snd0,timer-period={}", timer_period_us(*frequency))
            }
        }
    }
}

/// One boot of the guest.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// `sim-guest`'s arguments.
    pub args: Vec<String>,
    /// Extra files in the initramfs: guest path, contents (e.g. `/in.wav`).
    pub files: Vec<(String, Vec<u8>)>,
    pub audiodev: Audiodev,
    /// QEMU is killed after this long.
    pub timeout: Duration,
    /// Copy every console line to standard error as it arrives.
    pub echo: bool,
}

impl Default for GuestRun {
    fn default() -> Self {
        GuestRun {
            args: Vec::new(),
            files: Vec::new(),
            audiodev: Audiodev::None { frequency: 48000 },
            timeout: Duration::from_secs(120),
            echo: false,
        }
    }
}

/// What a guest run printed.
#[derive(Debug, Clone, Default)]
pub struct GuestOutput {
    /// The serial console, line by line (kernel messages included).
    pub console: Vec<String>,
    /// Every `@@virtio_sound result JSON` line, parsed.
    pub results: Vec<serde_json::Value>,
    /// `sim-guest`'s exit status, from `@@virtio_sound exit N`.
    pub exit: Option<i32>,
    /// From starting QEMU to its exit.
    pub wall: Duration,
    /// QEMU's own standard error.
    pub stderr: String,
}

impl GuestOutput {
    /// The last `n` console lines, one per line.
    pub fn tail(&self, n: usize) -> String {
        let from = self.console.len().saturating_sub(n);
        self.console[from..].join("\n")
    }
}

/// A run that did not end with `@@virtio_sound exit 0`: why, and everything it printed
/// (reachable from a `crate::Result` error by `downcast_ref::<GuestFailure>()`).
#[derive(Debug)]
pub struct GuestFailure {
    pub reason: String,
    pub output: GuestOutput,
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.reason)?;
        if !self.output.stderr.trim().is_empty() {
            write!(f, "\nQEMU said:\n{}", self.output.stderr.trim_end())?;
        }
        write!(
            f,
            "\nlast {TAIL} console lines:\n{}",
            self.output.tail(TAIL)
        )
    }
}

impl std::error::Error for GuestFailure {}

/// A fresh directory under `target/qemu/runs/`, removed when dropped.
pub fn run_dir() -> Result<tempfile::TempDir> {
    let runs = root().join(OUT_DIR).join("runs");
    std::fs::create_dir_all(&runs).map_err(|e| format!("{}: {e}", runs.display()))?;
    Ok(tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&runs)
        .map_err(|e| format!("{}: {e}", runs.display()))?)
}

/// Whether `/dev/kvm` opens read-write.
pub fn kvm_available() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Forces the accelerator: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "VIRTIO_SOUND_QEMU_ACCEL";

/// Set once KVM failed to run a guest in this process: later runs use TCG directly.
static KVM_BROKEN: AtomicBool = AtomicBool::new(false);

/// QEMU's accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// `$VIRTIO_SOUND_QEMU_ACCEL` if set; else KVM if `/dev/kvm` opens read-write and KVM
    /// has not failed in this process; else TCG.
    pub fn choose() -> Result<Accel> {
        match std::env::var(ACCEL_ENV).unwrap_or_default().as_str() {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            "" if kvm_available() && !KVM_BROKEN.load(Ordering::Relaxed) => Ok(Accel::Kvm),
            "" => Ok(Accel::Tcg),
            other => Err(format!("{ACCEL_ENV}={other:?}: use kvm or tcg").into()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything a guest boot needs besides the run itself.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    pub busybox: PathBuf,
    /// The program run as `/sim-guest`.
    pub runner: PathBuf,
    /// The add-on, as `/virtio_sound`.
    pub addon: PathBuf,
}

impl Guest {
    /// Checks QEMU, builds the add-on (unless given) and `sim-guest`, and fetches the kernel
    /// and busybox.
    pub fn prepare(addon: Option<&Path>) -> Result<Guest> {
        qemu_usable()?;
        let addon = match addon {
            Some(p) => p.to_path_buf(),
            None => crate::haiku::build()?,
        };
        let runner = build_sim_guest()?;
        let (kernel, busybox) = guest_kernel_and_busybox()?;
        Ok(Guest {
            kernel,
            busybox,
            runner,
            addon,
        })
    }

    /// [`Guest::prepare`] once per process, with the add-on built from the workspace.
    #[allow(dead_code)] // for the tests
    pub fn shared() -> Result<&'static Guest> {
        static GUEST: OnceLock<std::result::Result<Guest, String>> = OnceLock::new();
        GUEST
            .get_or_init(|| Guest::prepare(None).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| e.clone().into())
    }

    /// Boots the guest once. An error (a [`GuestFailure`] when QEMU ran) unless the guest
    /// printed `@@virtio_sound exit 0` before the timeout. If KVM fails (some nested
    /// hypervisors cannot emulate what the kernel's decompressor does), the run is repeated
    /// with TCG, and later runs of this process use TCG.
    pub fn run(&self, run: &GuestRun) -> Result<GuestOutput> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let image = initramfs(
            &read(&self.busybox)?,
            &read(&self.runner)?,
            &read(&self.addon)?,
            &guest_modules(&self.kernel),
            &run.args,
            &run.files,
        );
        let dir = run_dir()?;
        let initrd = dir.path().join("initramfs.cpio");
        std::fs::write(&initrd, image).map_err(|e| format!("{}: {e}", initrd.display()))?;
        let accel = Accel::choose()?;
        // QEMU runs in the run directory: a relative kernel path is the caller's.
        let kernel = std::path::absolute(&self.kernel)
            .map_err(|e| format!("{}: {e}", self.kernel.display()))?;
        let guest = Guest {
            kernel,
            ..self.clone()
        };
        let cmd = guest.command(accel, &initrd, run, dir.path());
        match run_qemu(cmd, run.timeout, run.echo)? {
            Qemu::Done(out) => out,
            Qemu::KvmFailed(why) if std::env::var(ACCEL_ENV).unwrap_or_default().is_empty() => {
                KVM_BROKEN.store(true, Ordering::Relaxed);
                eprintln!("==> KVM cannot run the guest ({why}); using TCG from now on");
                match run_qemu(
                    guest.command(Accel::Tcg, &initrd, run, dir.path()),
                    run.timeout,
                    run.echo,
                )? {
                    Qemu::Done(out) => out,
                    Qemu::KvmFailed(why) => Err(why.into()),
                }
            }
            Qemu::KvmFailed(why) => Err(format!("KVM cannot run the guest: {why}").into()),
        }
    }

    /// The QEMU command line of one run.
    pub fn command(&self, accel: Accel, initrd: &Path, run: &GuestRun, dir: &Path) -> Command {
        let mut cmd = Command::new(QEMU);
        cmd.args(["-M", "q35", "-accel", accel.name()]);
        cmd.args(["-m", "512", "-smp", "1"])
            // No network card: the sound device is the only PCI function the guest drives,
            // and no boot ROM probes a network for half a second.
            .args(["-nographic", "-no-reboot", "-nic", "none", "-kernel"])
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .args([
                "-append",
                "console=ttyS0 panic=-1 quiet hugepages=32",
                "-audiodev",
                &run.audiodev.option(),
                "-device",
                "virtio-sound-pci,audiodev=snd0",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// [`Guest::shared`]`.run(run)`.
#[allow(dead_code)] // for the tests
pub fn run_guest(run: &GuestRun) -> Result<GuestOutput> {
    Guest::shared()?.run(run)
}

/// How a QEMU run ended.
enum Qemu {
    /// The guest's verdict.
    Done(Result<GuestOutput>),
    /// KVM could not run the guest (QEMU's message); TCG may.
    KvmFailed(String),
}

enum Line {
    Console(String),
    Stderr(String),
}

/// Runs QEMU, collecting the console until it exits or `timeout` passes. The error is QEMU
/// not starting.
fn run_qemu(mut cmd: Command, timeout: Duration, echo: bool) -> Result<Qemu> {
    let kvm = cmd.get_args().any(|a| a == "kvm");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {QEMU}: {e}"))?;
    let stdout = child.stdout.take().ok_or("no QEMU stdout")?;
    let stderr = child.stderr.take().ok_or("no QEMU stderr")?;
    let (tx, rx) = mpsc::channel::<Line>();
    let lines = |from: Box<dyn Read + Send>, tx: mpsc::Sender<Line>, wrap: fn(String) -> Line| {
        std::thread::spawn(move || {
            for line in BufReader::new(from).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                if tx.send(wrap(line)).is_err() {
                    break;
                }
            }
        })
    };
    let readers = [
        lines(Box::new(stdout), tx.clone(), Line::Console),
        lines(Box::new(stderr), tx, Line::Stderr),
    ];
    let deadline = started + timeout;
    let mut out = GuestOutput::default();
    let mut kvm_failed = None;
    let take = |line: Line, out: &mut GuestOutput, kvm_failed: &mut Option<String>| match line {
        Line::Console(line) => {
            if echo {
                eprintln!("{line}");
            }
            out.console.push(line);
        }
        Line::Stderr(line) => {
            // QEMU pauses the guest and waits after this; nothing more will come.
            if kvm && kvm_failed.is_none() && line.contains("KVM internal error") {
                *kvm_failed = Some(line.clone());
            }
            out.stderr.push_str(&line);
            out.stderr.push('\n');
        }
    };
    let mut timed_out = false;
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                take(line, &mut out, &mut kvm_failed);
                if kvm_failed.is_some() {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for {QEMU}: {e}").into());
            }
        }
        if kvm_failed.is_some() || timed_out || Instant::now() >= deadline {
            timed_out = kvm_failed.is_none();
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    out.wall = started.elapsed();
    for r in readers {
        let _ = r.join();
    }
    for line in rx.try_iter() {
        take(line, &mut out, &mut kvm_failed);
    }
    if let Some(why) = kvm_failed {
        return Ok(Qemu::KvmFailed(why));
    }
    // QEMU refusing to start under KVM (e.g. an MSR the host's KVM rejects).
    if kvm
        && status.is_some_and(|s| !s.success())
        && !out.console.iter().any(|l| l.contains(EXIT_MARK))
        && out.stderr.to_ascii_lowercase().contains("kvm")
    {
        return Ok(Qemu::KvmFailed(out.stderr.trim().to_string()));
    }
    let fail = |reason: String, output: GuestOutput| -> Result<GuestOutput> {
        Err(Box::new(GuestFailure { reason, output }))
    };
    let mut bad_results = Vec::new();
    // isa-debug-exit: the guest writes its status + 1 (at most 127, see `sim-guest exit`),
    // QEMU exits with 2 * value + 1. QEMU's own failures exit with 1 (value 0), a power-off
    // with 0: neither is a guest verdict.
    let device_exit = status
        .and_then(|s| s.code())
        .filter(|c| c % 2 == 1 && *c >= 3)
        .map(|c| (c >> 1) - 1);
    for line in &out.console {
        if let Some(at) = line.find(RESULT_MARK) {
            let json = &line[at + RESULT_MARK.len()..];
            match serde_json::from_str(json) {
                Ok(v) => out.results.push(v),
                Err(e) => bad_results.push(format!("{e}: {line}")),
            }
        } else if let Some(at) = line.find(EXIT_MARK) {
            out.exit = line[at + EXIT_MARK.len()..].trim().parse().ok();
        }
    }
    if timed_out {
        let reason = format!(
            "QEMU did not finish within {} s and was killed{}",
            timeout.as_secs_f64(),
            match out.exit {
                Some(n) => format!(" (the guest had printed exit {n})"),
                None => String::new(),
            }
        );
        return Ok(Qemu::Done(fail(reason, out)));
    }
    let qemu = status.map(|s| s.to_string()).unwrap_or_default();
    match (device_exit, out.exit) {
        (Some(d), Some(c)) if d != c => {
            let reason = format!(
                "the exit device said {d} but the console said {c}: the console is garbled"
            );
            return Ok(Qemu::Done(fail(reason, out)));
        }
        (Some(d), None) => out.exit = Some(d),
        _ => {}
    }
    Ok(Qemu::Done(match out.exit {
        None => fail(
            format!("the guest never printed `{EXIT_MARK}N` (QEMU {qemu})"),
            out,
        ),
        Some(0) if !bad_results.is_empty() => fail(
            format!("unparsable result lines:\n{}", bad_results.join("\n")),
            out,
        ),
        Some(0) => Ok(out),
        Some(n) => fail(format!("sim-guest exited with status {n}"), out),
    }))
}

// ---------------------------------------------------------------------------------------
// QEMU's WAV files

/// Sets the RIFF and `data` sizes of a WAV file QEMU did not finish (its wav backend writes
/// them only at a clean exit) from the file's length: a `data` chunk whose size is 0 or runs
/// past the end holds the rest of the file.
fn fix_wav_sizes(b: &mut [u8]) {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return;
    }
    let riff = (b.len() - 8) as u32;
    b[4..8].copy_from_slice(&riff.to_le_bytes());
    let mut pos = 12;
    while pos + 8 <= b.len() {
        let len = u32::from_le_bytes([b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]]) as usize;
        let rest = b.len() - pos - 8;
        if &b[pos..pos + 4] == b"data" {
            if len == 0 || len > rest {
                b[pos + 4..pos + 8].copy_from_slice(&(rest as u32).to_le_bytes());
            }
            return;
        }
        pos += 8 + len + (len & 1);
    }
}

/// Reads a WAV file written by QEMU's wav audio backend, also one whose sizes were never
/// written because QEMU was killed or left through isa-debug-exit.
pub fn read_qemu_wav(path: &Path) -> Result<Wav> {
    let mut b = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    fix_wav_sizes(&mut b);
    Ok(Wav::parse(&b).map_err(|e| format!("{}: {e}", path.display()))?)
}

// ---------------------------------------------------------------------------------------
// The command

#[cfg(test)]
mod tests {
    use super::*;

    /// name, mode, rdev (major, minor), data
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back, trailer excluded.
    fn parse_cpio(mut b: &[u8]) -> Vec<Entry> {
        let hex = |s: &[u8]| u32::from_str_radix(std::str::from_utf8(s).unwrap(), 16).unwrap();
        let mut total = 0;
        let mut out = Vec::new();
        loop {
            assert_eq!(&b[..6], b"070701", "magic at offset {total}");
            let f: Vec<u32> = (0..13).map(|i| hex(&b[6 + 8 * i..14 + 8 * i])).collect();
            assert_eq!(f[12], 0, "check");
            let namesize = f[11] as usize;
            let name = std::str::from_utf8(&b[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(b[110 + namesize - 1], 0);
            let data_at = (110 + namesize).next_multiple_of(4);
            let size = f[6] as usize;
            let data = b[data_at..data_at + size].to_vec();
            let next = (data_at + size).next_multiple_of(4);
            assert!(b[110 + namesize..data_at].iter().all(|&x| x == 0));
            assert!(b[data_at + size..next].iter().all(|&x| x == 0));
            total += next;
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, f[1], (f[9], f[10]), data));
        }
    }

    fn sample() -> Vec<u8> {
        initramfs(
            b"BUSYBOX",
            b"RUNNER!",
            b"addon bytes",
            &[
                ("uio.ko.xz".into(), b"UIO".to_vec()),
                ("uio_pci_generic.ko".into(), b"GENERIC".to_vec()),
            ],
            &["play".into(), "it's".into()],
            &[
                ("/in.wav".into(), vec![1, 2, 3]),
                ("/deep/er/x".into(), vec![]),
            ],
        )
    }

    #[test]
    fn cpio_parses_back() {
        let a = sample();
        assert_eq!(a.len() % 4, 0);
        let entries = parse_cpio(&a);
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        for d in [
            "bin",
            "dev",
            "proc",
            "sys",
            "tmp",
            "mnt/huge",
            "deep",
            "deep/er",
            "lib",
            "lib/modules",
        ] {
            assert_eq!(get(d).1, S_IFDIR | 0o755, "{d}");
        }
        assert_eq!(get("bin/busybox").1, S_IFREG | 0o755);
        assert_eq!(get("bin/busybox").3, b"BUSYBOX");
        assert_eq!(get("sim-guest").3, b"RUNNER!");
        assert_eq!(get("virtio_sound").1, S_IFREG | 0o644);
        assert_eq!(get("virtio_sound").3, b"addon bytes");
        assert_eq!(get("in.wav").3, [1, 2, 3]);
        assert_eq!(get("dev/console").1, S_IFCHR | 0o600);
        assert_eq!(get("dev/console").2, (5, 1));
        let init = String::from_utf8(get("init").3.clone()).unwrap();
        assert_eq!(get("init").1, S_IFREG | 0o755);
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        assert!(init.contains(r"/sim-guest 'play' 'it'\''s' "), "{init}");
        assert!(init.contains(EXIT_MARK));
        // The modules, loaded in order before sim-guest runs; a compressed one is
        // decompressed first, and one that fails to load does not stop the boot.
        assert_eq!(get("lib/modules/uio.ko.xz").1, S_IFREG | 0o644);
        assert_eq!(get("lib/modules/uio.ko.xz").3, b"UIO");
        assert_eq!(get("lib/modules/uio_pci_generic.ko").3, b"GENERIC");
        let uio = init
            .find("unxz -c '/lib/modules/uio.ko.xz' >'/tmp/uio.ko' && insmod '/tmp/uio.ko' || ")
            .unwrap_or_else(|| panic!("{init}"));
        let generic = init
            .find("insmod '/lib/modules/uio_pci_generic.ko' || ")
            .unwrap_or_else(|| panic!("{init}"));
        let runner = init.find("/sim-guest 'play'").unwrap();
        assert!(uio < generic && generic < runner, "{init}");
        assert!(!init.contains("set -e"), "{init}");
        // Every parent precedes its children.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.0.rsplit_once('/') {
                assert!(entries[..i].iter().any(|p| p.0 == parent), "{}", e.0);
            }
        }
        // A file replaces a fixed entry of the same path.
        let a = initramfs(
            b"b",
            b"r",
            b"a",
            &[],
            &[],
            &[("/virtio_sound".into(), b"x".to_vec())],
        );
        let e = parse_cpio(&a);
        let addons: Vec<_> = e.iter().filter(|e| e.0 == "virtio_sound").collect();
        assert_eq!(addons.len(), 1);
        assert_eq!(addons[0].3, b"x");
        // Without modules: nothing under lib/, and /init loads nothing.
        assert!(!e.iter().any(|e| e.0.starts_with("lib")));
        let init = String::from_utf8(e.iter().find(|e| e.0 == "init").unwrap().3.clone());
        assert!(!init.unwrap().contains("insmod"));
    }

    #[test]
    fn modules_come_from_the_kernel_tree() {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        let uio = dir.path().join("lib/modules/6.1.0-x/kernel/drivers/uio");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::create_dir_all(&uio).unwrap();
        let kernel = boot.join("vmlinuz-6.1.0-x");
        std::fs::write(&kernel, b"k").unwrap();
        // Nothing there yet.
        assert!(guest_modules(&kernel).is_empty());
        std::fs::write(uio.join("uio_pci_generic.ko.xz"), b"G").unwrap();
        std::fs::write(uio.join("uio.ko"), b"U").unwrap();
        std::fs::write(uio.join("uio_cif.ko.xz"), b"C").unwrap();
        assert_eq!(
            guest_modules(&kernel),
            vec![
                ("uio.ko".to_string(), b"U".to_vec()),
                ("uio_pci_generic.ko.xz".to_string(), b"G".to_vec()),
            ]
        );
        // Another version's modules do not fit this kernel; a bare vmlinuz has none.
        assert!(guest_modules(&boot.join("vmlinuz-6.1.0-y")).is_empty());
        let bare = dir.path().join("vmlinuz");
        std::fs::write(&bare, b"k").unwrap();
        assert!(guest_modules(&bare).is_empty());
        assert!(guest_modules(&dir.path().join("lib/vmlinuz-6.1.0-x")).is_empty());
    }

    /// The kernel `guest_kernel_and_busybox` fetched (if it did) comes with both modules.
    #[test]
    fn the_debian_kernel_has_the_uio_modules() {
        let Ok((kernel, _)) = guest_kernel_and_busybox() else {
            eprintln!("skipping: no guest kernel");
            return;
        };
        if std::env::var_os(KERNEL_ENV).is_some() {
            eprintln!("skipping: {KERNEL_ENV} is set");
            return;
        }
        let names: Vec<String> = guest_modules(&kernel).into_iter().map(|m| m.0).collect();
        assert_eq!(
            names,
            ["uio.ko.xz", "uio_pci_generic.ko.xz"],
            "{}",
            kernel.display()
        );
    }

    #[test]
    fn busybox_cpio_lists_the_archive() {
        let bb = Path::new("/bin/busybox");
        if !bb.exists() {
            eprintln!("no /bin/busybox: skipping the busybox cpio listing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, sample()).unwrap();
        let out = Command::new(bb)
            .args(["cpio", "-t"])
            .stdin(std::fs::File::open(&path).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let ours: Vec<String> = parse_cpio(&sample()).into_iter().map(|e| e.0).collect();
        assert_eq!(listed, ours);
    }

    #[test]
    fn versions_and_packages_parse() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 8.2"),
            Some((8, 2, 0))
        );
        assert_eq!(parse_qemu_version("something else"), None);
        assert!((7, 2, 9) < MIN_QEMU && (8, 2, 0) >= MIN_QEMU && (10, 0, 0) > MIN_QEMU);
        assert_eq!(
            parse_depends(
                "linux-image-cloud-amd64\n  Depends: linux-image-6.12.95+deb12-cloud-amd64\n"
            )
            .as_deref(),
            Some("linux-image-6.12.95+deb12-cloud-amd64")
        );
        assert_eq!(parse_depends("x\n  Recommends: y\n"), None);
    }

    #[test]
    fn audiodev_options() {
        let w = Audiodev::Wav {
            path: PathBuf::from("/a,b.wav"),
            frequency: 44100,
            channels: 2,
        };
        assert_eq!(
            w.option(),
            "wav,id=snd0,path=/a,,b.wav,out.frequency=44100,out.channels=2,out.format=s16,out.fixed-settings=on,timer-period=10000"
        );
        assert_eq!(
            Audiodev::None { frequency: 384000 }.option(),
            "none,id=snd0,timer-period=1333"
        );
        assert_eq!(timer_period_us(48000), 10_000);
        assert_eq!(timer_period_us(192000), 2666);
    }

    #[test]
    fn unfinished_qemu_wavs_read() {
        let w = Wav::sine(997.0, 48000, 2, hmulti_client::wav::SampleFormat::S16, 0.01);
        let good = w.to_bytes();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.wav");
        // As QEMU leaves it when killed: both sizes 0.
        let mut zero = good.clone();
        zero[4..8].fill(0);
        zero[40..44].fill(0);
        std::fs::write(&path, &zero).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
        // A size larger than the file (written, then truncated by a crash).
        let mut long = good.clone();
        long[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &long).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
        // A complete file is left alone.
        std::fs::write(&path, &good).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
        // A half frame at the end is dropped.
        let mut odd = zero.clone();
        odd.push(7);
        std::fs::write(&path, &odd).unwrap();
        assert_eq!(read_qemu_wav(&path).unwrap(), w);
    }

    #[test]
    fn backports_hint_names_the_suite() {
        let h = backports_stanza();
        assert!(h.contains("Suites: bookworm-backports"), "{h}");
        assert!(h.contains("apt-get update"), "{h}");
    }

    /// The whole host side with a shell script in place of sim-guest: kernel, busybox,
    /// initramfs, QEMU with virtio-sound-pci, result and exit lines, failures, timeouts.
    #[test]
    fn a_placeholder_guest_boots_and_reports() {
        if let Err(e) = qemu_usable() {
            eprintln!("skipping: {e}");
            return;
        }
        let (kernel, busybox) = match guest_kernel_and_busybox() {
            Ok(kb) => kb,
            Err(e) => {
                eprintln!("skipping: no guest kernel or busybox: {e}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let runner = dir.path().join("runner");
        std::fs::write(
            &runner,
            "#!/bin/busybox sh\n\
             # /init hands the status to the exit device with `sim-guest exit N`.\n\
             test \"$1\" = exit && exit 0\n\
             # virtio-sound-pci is 1af4:1059\n\
             dev=$(grep -l 0x1059 /sys/bus/pci/devices/*/device | wc -l)\n\
             echo \"@@virtio_sound result {\\\"args\\\": \\\"$*\\\", \\\"sound_devices\\\": $dev, \\\"input\\\": \\\"$(cat /in.txt)\\\"}\"\n\
             test -f /virtio_sound && test -d /mnt/huge || exit 9\n\
             case \"$1\" in fail) exit 3;; hang) sleep 1000;; esac\n",
        )
        .unwrap();
        let guest = Guest {
            kernel,
            busybox,
            runner,
            addon: PathBuf::from("/bin/sh"),
        };
        let wav = dir.path().join("out.wav");
        let run = GuestRun {
            args: vec!["ok".into(), "two words".into()],
            files: vec![("/in.txt".into(), b"hello".to_vec())],
            audiodev: Audiodev::Wav {
                path: wav.clone(),
                frequency: 48000,
                channels: 2,
            },
            timeout: Duration::from_secs(60),
            echo: false,
        };
        let out = guest.run(&run).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.exit, Some(0));
        assert_eq!(
            out.results,
            vec![serde_json::json!({"args": "ok two words", "sound_devices": 1, "input": "hello"})]
        );
        let played = read_qemu_wav(&wav).unwrap();
        assert_eq!((played.rate, played.channels), (48000, 2));
        eprintln!("placeholder guest: {:?}", out.wall);

        let fail = GuestRun {
            args: vec!["fail".into()],
            audiodev: Audiodev::None { frequency: 48000 },
            ..run.clone()
        };
        let e = guest.run(&fail).unwrap_err();
        let f = e.downcast_ref::<GuestFailure>().unwrap();
        assert_eq!(f.output.exit, Some(3), "{f}");
        assert!(f.to_string().contains("status 3"), "{f}");

        let hang = GuestRun {
            args: vec!["hang".into()],
            timeout: Duration::from_secs(5),
            ..fail
        };
        let e = guest.run(&hang).unwrap_err();
        let f = e.downcast_ref::<GuestFailure>().unwrap();
        assert!(f.reason.contains("did not finish within 5 s"), "{f}");
        assert_eq!(f.output.exit, None);
        assert!(
            f.output.wall < Duration::from_secs(8),
            "{:?}",
            f.output.wall
        );
    }
}
