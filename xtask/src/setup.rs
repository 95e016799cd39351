//! What the tests need from the machine: `cargo xtask setup [--check]`, and the first step of
//! `cargo xtask test`.
//!
//! Each prerequisite is a row of [`PREREQS`]: what it is for, how it is found (cheaply: a file,
//! a `--version`, libclang loaded the way bindgen loads it; never `apt-get update`), and the
//! Debian (and Ubuntu) packages that provide it. What is missing is installed with `apt-get`
//! when this process may (root, or `sudo -n` works; `cargo xtask setup` also lets sudo ask for
//! a password), printing each command before running it, then everything is looked for again.
//!
//! QEMU comes from bookworm-backports on Debian bookworm (bookworm's own QEMU is 7.2, older
//! than `virtio-sound-pci`), through an apt source entry made from the machine's own first
//! Debian stanza with another suite, so that no mirror is named here; the QEMU tests' guest
//! kernel comes from there too (`cargo xtask qemu` fetches it with `apt-get download`). On any
//! other release that kernel cannot be fetched, so QEMU is installed (the distribution's
//! `qemu-system-x86`, its version checked afterwards) only when `VIRTIO_SOUND_QEMU_KERNEL`
//! gives one; otherwise the QEMU tests cannot run there, and setup says so.
//!
//! vhost-device-sound (the QEMU tests' second device) is a Rust program published as a crate: it is
//! installed as a user installs it, with `cargo install` of a pinned version into the user's
//! cargo bin directory (as this user, not root, after the Debian packages it builds with), and
//! found on `PATH` or in that directory.
//!
//! The QEMU tests skip without QEMU unless `CI=true` or `VIRTIO_SOUND_REQUIRE_QEMU` is set, so
//! QEMU is optional otherwise: when it cannot be installed, `cargo xtask test` warns and goes
//! on. Everything else is required.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// Set (to anything) to make the QEMU tests fail rather than skip when QEMU is missing.
pub const REQUIRE_QEMU_ENV: &str = "VIRTIO_SOUND_REQUIRE_QEMU";
/// The header the virtio-snd spec is checked against (`spec/virtio_snd.toml`'s `header`),
/// from Linux's UAPI (`include/uapi/linux/virtio_snd.h`), packaged by Debian as linux-libc-dev.
pub const UAPI_HEADER: &str = "/usr/include/linux/virtio_snd.h";

const OS_RELEASE: [&str; 2] = ["/etc/os-release", "/usr/lib/os-release"];
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const SOURCES_LIST: &str = "/etc/apt/sources.list";
/// Where `apt-get update` keeps the package lists it fetched.
const LISTS_DIR: &str = "/var/lib/apt/lists";
/// The entry written for bookworm-backports: deb822 when made from `debian.sources`, one-line
/// format when made from `sources.list`.
const BACKPORTS_SOURCES: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/bookworm-backports.list";
/// The one command a user runs when `cargo xtask test` cannot install by itself.
const SETUP_COMMAND: &str = "cargo xtask setup";

/// Who needs a prerequisite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `cargo xtask test` cannot run without it.
    All,
    /// Only the QEMU tests, which skip without it unless QEMU is required.
    Qemu,
}

/// One thing the tests need from the machine.
pub struct Prereq {
    pub name: &'static str,
    pub purpose: &'static str,
    /// The Debian (and Ubuntu) packages that provide it; none for the apt source entry.
    pub packages: &'static [&'static str],
    pub scope: Scope,
    /// On Debian bookworm, it comes from bookworm-backports (and needs its source entry).
    pub backports: bool,
    /// Installed with `cargo install` into the user's cargo bin directory, after `packages`
    /// (what building it needs).
    pub cargo: Option<&'static CargoCrate>,
    /// Whether it is needed on this machine at all.
    applies: fn(&OsRelease) -> bool,
    /// `Ok(what was found)` or `Err(why it is missing)`.
    detect: fn() -> std::result::Result<String, String>,
}

/// Everything `cargo xtask test` needs beyond Rust, in the order it is reported.
pub static PREREQS: &[Prereq] = &[
    Prereq {
        name: "C compiler",
        purpose: "compiles the generated C headers to confirm every size and offset",
        packages: &["gcc"],
        scope: Scope::All,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_cc,
    },
    Prereq {
        name: "strip",
        purpose: "cargo xtask build-haiku strips the add-on",
        packages: &["binutils"],
        scope: Scope::All,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_strip,
    },
    Prereq {
        name: "C++ compiler",
        purpose: "builds libFuzzer (the libfuzzer-sys crate) for cargo xtask fuzz, which \
                  cargo xtask test runs briefly",
        packages: &["g++"],
        scope: Scope::All,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_cxx,
    },
    Prereq {
        name: "valgrind",
        purpose: "the memcheck test runs the built add-on in the simulator under it; \
                  cargo xtask bench counts instructions with its callgrind",
        packages: &["valgrind"],
        scope: Scope::All,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_valgrind,
    },
    Prereq {
        name: "libclang",
        purpose: "bindgen reads the real headers in cargo xtask crosscheck",
        packages: &["libclang-dev"],
        scope: Scope::All,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_libclang,
    },
    Prereq {
        name: "Linux UAPI headers",
        purpose: "cargo xtask crosscheck compares every struct and constant of the virtio \
                  sound spec with linux/virtio_snd.h, which has virtio 1.3's control elements \
                  since Linux 6.9",
        packages: &["linux-libc-dev"],
        scope: Scope::All,
        // Bookworm's own is Linux 6.1's.
        backports: true,
        cargo: None,
        applies: always,
        detect: detect_uapi_header,
    },
    Prereq {
        name: "QEMU",
        purpose: "the QEMU tests play through its virtio-sound-pci device",
        packages: &["qemu-system-x86"],
        scope: Scope::Qemu,
        backports: true,
        cargo: None,
        applies: always,
        detect: detect_qemu,
    },
    Prereq {
        name: "PulseAudio",
        purpose: "the QEMU tests record and play through a private headless PulseAudio \
                  (`cargo xtask qemu --backend pa`): pulseaudio, parec, paplay, pactl",
        packages: &["pulseaudio", "pulseaudio-utils"],
        scope: Scope::Qemu,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_pulseaudio,
    },
    Prereq {
        name: "JACK",
        purpose: "the QEMU tests run full duplex through a private jackd \
                  (`cargo xtask qemu --backend jack`)",
        packages: &["jackd2"],
        scope: Scope::Qemu,
        backports: false,
        cargo: None,
        applies: always,
        detect: detect_jackd,
    },
    Prereq {
        name: "bookworm-backports in apt's sources",
        purpose: "the QEMU tests' guest kernel (linux-image-cloud-amd64) comes from it",
        packages: &[],
        scope: Scope::Qemu,
        backports: true,
        cargo: None,
        applies: kernel_from_backports,
        detect: detect_backports_source,
    },
    Prereq {
        name: "a guest kernel for QEMU",
        purpose: "the QEMU tests boot it",
        packages: &[],
        scope: Scope::Qemu,
        backports: false,
        cargo: None,
        applies: kernel_from_elsewhere,
        detect: detect_kernel_elsewhere,
    },
    Prereq {
        name: "vhost-device-sound",
        purpose: "the QEMU tests' second device (cargo xtask qemu --device vhost): rust-vmm's \
                  virtio-sound device behind QEMU's vhost-user-snd-pci",
        // What `cargo install` needs to build its ALSA backend.
        packages: &["libasound2-dev", "pkg-config"],
        scope: Scope::Qemu,
        backports: false,
        cargo: Some(&VHOST_SOUND),
        applies: always,
        detect: detect_vhost_sound,
    },
];

fn always(_: &OsRelease) -> bool {
    true
}

fn kernel_from_backports(os: &OsRelease) -> bool {
    os.is_bookworm() && std::env::var_os(KERNEL_ENV).is_none()
}

/// Not on bookworm, without `VIRTIO_SOUND_QEMU_KERNEL`.
fn kernel_from_elsewhere(os: &OsRelease) -> bool {
    !os.is_bookworm() && std::env::var_os(KERNEL_ENV).is_none()
}

impl Prereq {
    /// Whether apt-get (and the bookworm-backports entry) can provide it here.
    pub fn installable(&self, os: &OsRelease) -> bool {
        !self.packages.is_empty() || self.cargo.is_some() || (self.backports && os.is_bookworm())
    }
}

/// What to install of `missing`: all that apt can provide, except that the QEMU tests'
/// prerequisites are left alone when one of them cannot be had (QEMU without a guest kernel
/// would only turn the QEMU tests' skip into a failure).
pub fn to_install<'a>(missing: &[&'a Prereq], os: &OsRelease) -> Vec<&'a Prereq> {
    let qemu_blocked = missing
        .iter()
        .any(|p| p.scope == Scope::Qemu && !p.installable(os));
    missing
        .iter()
        .copied()
        .filter(|p| p.installable(os) && !(qemu_blocked && p.scope == Scope::Qemu))
        .collect()
}

// ---------------------------------------------------------------------------------------
// QEMU and its guest kernel (`xtask-addon`'s `qemu` command uses these too)

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The oldest QEMU with `virtio-sound-pci`.
pub const MIN_QEMU: (u32, u32, u32) = (8, 2, 0);
/// The Debian suite QEMU, the guest kernel and the Linux UAPI headers come from on bookworm.
pub const BACKPORTS: &str = "bookworm-backports";

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

/// A guest kernel for `cargo xtask qemu` to use instead of the downloaded one (a `vmlinuz`).
pub const KERNEL_ENV: &str = "VIRTIO_SOUND_QEMU_KERNEL";

// ---------------------------------------------------------------------------------------
// vhost-device-sound, the second device (`xtask-addon`'s `qemu --device vhost` uses these too)

/// A program a user installs with `cargo install` into their cargo bin directory.
#[derive(Debug)]
pub struct CargoCrate {
    /// The crate, which is also the program's name.
    pub name: &'static str,
    /// The one version the tests are written against (`cargo install --version`).
    pub version: &'static str,
    /// The rest of `cargo install`'s arguments.
    pub args: &'static [&'static str],
}

impl CargoCrate {
    /// `cargo install NAME --version V ARGS`, as a user types it.
    pub fn install_command(&self) -> Vec<String> {
        ["cargo", "install", self.name, "--version", self.version]
            .iter()
            .chain(self.args)
            .map(|w| w.to_string())
            .collect()
    }

    /// What its `--version` prints (clap's `NAME VERSION`).
    pub fn version_line(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// rust-vmm's vhost-device-sound, pinned: the tests were written against 0.3.0's behaviour
/// (its null backend completes playback as soon as it is queued and never completes capture).
/// Its default features build the GStreamer backend, which needs GStreamer 1.24 (newer than
/// Debian bookworm's), so only the ALSA backend is built; `--locked` takes the versions of
/// the Cargo.lock the crate is published with.
pub static VHOST_SOUND: CargoCrate = CargoCrate {
    name: "vhost-device-sound",
    version: "0.3.0",
    args: &[
        "--locked",
        "--no-default-features",
        "--features",
        "alsa-backend",
    ],
};

/// The directory `cargo install` puts programs in: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home).join("bin"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".cargo").join("bin"))
}

/// `name` on `PATH`, else in [`cargo_bin_dir`] (which a user's `PATH` may not name).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(cargo_bin_dir())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// vhost-device-sound as the tests need it: found, [`VHOST_SOUND`]'s version, with the ALSA
/// backend. `Err` says what is wrong and the command that installs it.
pub fn vhost_sound() -> std::result::Result<PathBuf, String> {
    let c = &VHOST_SOUND;
    let install = format!("Install it with `{}`", c.install_command().join(" "));
    let Some(path) = find_program(c.name) else {
        let bin = cargo_bin_dir().map_or_else(
            || "cargo's bin directory".to_string(),
            |d| d.display().to_string(),
        );
        return Err(format!(
            "{} is neither on PATH nor in {bin}. {install}.",
            c.name
        ));
    };
    let shown = path.display().to_string();
    let version = first_line(&shown, &["--version"])?;
    if version != c.version_line() {
        return Err(format!(
            "{shown} says {version:?}, not {:?}. {install}.",
            c.version_line()
        ));
    }
    let help = Command::new(&path)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{shown} --help` cannot run: {e}"))?;
    let help = String::from_utf8_lossy(&help.stdout);
    if !backend_names(&help).contains(&"alsa") {
        return Err(format!(
            "{shown} was built without its ALSA backend (--backend offers {:?}). {install}.",
            backend_names(&help)
        ));
    }
    Ok(path)
}

/// The backends in vhost-device-sound's `--help`: the line
/// `--backend <BACKEND>  audio backend to be used [possible values: null, alsa]`.
pub fn backend_names(help: &str) -> Vec<&str> {
    help.lines()
        .find(|l| l.trim_start().starts_with("--backend"))
        .and_then(|l| l.split("[possible values: ").nth(1))
        .and_then(|rest| rest.split(']').next())
        .map(|list| list.split(',').map(str::trim).collect())
        .unwrap_or_default()
}

fn detect_vhost_sound() -> std::result::Result<String, String> {
    vhost_sound().map(|p| format!("{} ({})", p.display(), VHOST_SOUND.version_line()))
}

// ---------------------------------------------------------------------------------------
// Detection

/// The first line `PROGRAM ARGS` prints, if it runs and succeeds.
fn first_line(program: &str, args: &[&str]) -> std::result::Result<String, String> {
    let shown = format!("`{program} {}`", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown} cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

fn detect_cc() -> std::result::Result<String, String> {
    // The compiler bindgen_check.rs and haiku.rs run.
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    first_line(&cc, &["--version"]).map(|v| format!("{cc}: {v}"))
}

fn detect_strip() -> std::result::Result<String, String> {
    first_line("strip", &["--version"])
}

fn detect_cxx() -> std::result::Result<String, String> {
    // The compiler the cc crate runs for libfuzzer-sys's C++.
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    first_line(&cxx, &["--version"]).map(|v| format!("{cxx}: {v}"))
}

fn detect_valgrind() -> std::result::Result<String, String> {
    first_line("valgrind", &["--version"])
}

/// libclang as bindgen finds it (`bindgen_check::libclang`).
fn detect_libclang() -> std::result::Result<String, String> {
    crate::bindgen_check::libclang()
}

fn detect_uapi_header() -> std::result::Result<String, String> {
    uapi_header(Path::new(UAPI_HEADER))
}

/// The header at `path` as `spec/virtio_snd.toml` needs it: there, and defining every
/// structure of the spec's version (`bindgen_check::header_is_current`, a text scan).
pub fn uapi_header(path: &Path) -> std::result::Result<String, String> {
    if !path.is_file() {
        return Err(format!("no {}", path.display()));
    }
    let specs = crate::gen::load_all().map_err(|e| format!("cannot read the spec: {e}"))?;
    let spec = specs
        .iter()
        .find(|s| s.name == "virtio_snd")
        .ok_or("no virtio_snd spec")?;
    crate::bindgen_check::header_is_current(spec, path)
}

/// `name` in one of `$PATH`'s directories.
fn on_path(name: &str) -> std::result::Result<std::path::PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("no {name} on PATH"))
}

fn detect_pulseaudio() -> std::result::Result<String, String> {
    for b in ["parec", "paplay", "pactl"] {
        on_path(b)?;
    }
    first_line("pulseaudio", &["--version"])
}

fn detect_jackd() -> std::result::Result<String, String> {
    let jackd = on_path("jackd")?;
    // The tap loads libjack at run time; jackd2 depends on it.
    if ![
        "/usr/lib/x86_64-linux-gnu/libjack.so.0",
        "/usr/lib64/libjack.so.0",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
    {
        return Err("no libjack.so.0 (libjack-jackd2-0)".into());
    }
    Ok(jackd.display().to_string())
}

fn detect_qemu() -> std::result::Result<String, String> {
    let (a, b, c) = qemu_version().ok_or_else(|| format!("`{QEMU} --version` does not run"))?;
    if (a, b, c) < MIN_QEMU {
        return Err(format!(
            "{QEMU} is {a}.{b}.{c}; {}.{} or newer is needed",
            MIN_QEMU.0, MIN_QEMU.1
        ));
    }
    let out = Command::new(QEMU)
        .args(["-device", "help"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{QEMU} -device help` cannot run: {e}"))?;
    let help = String::from_utf8_lossy(&out.stdout);
    if !device_names(&help).contains(&"virtio-sound-pci") {
        return Err(format!("{QEMU} {a}.{b}.{c} has no virtio-sound-pci device"));
    }
    Ok(format!("{QEMU} {a}.{b}.{c} with virtio-sound-pci"))
}

/// The device names in `qemu-system-x86_64 -device help`: lines such as
/// `name "virtio-sound-pci", bus PCI, alias "virtio-sound", desc "Virtio Sound"`.
pub fn device_names(help: &str) -> Vec<&str> {
    help.lines()
        .filter_map(|l| l.trim_start().strip_prefix("name \""))
        .filter_map(|rest| rest.split('"').next())
        .collect()
}

/// `cargo xtask qemu` takes its guest kernel from Debian bookworm-backports
/// (`qemu::resolve_kernel_package`), which apt cannot reach from another release.
fn detect_kernel_elsewhere() -> std::result::Result<String, String> {
    Err(format!(
        "`cargo xtask qemu` fetches it from Debian {BACKPORTS}, which this release has not \
         (/etc/os-release); set {KERNEL_ENV} to a Linux x86_64 bzImage"
    ))
}

fn detect_backports_source() -> std::result::Result<String, String> {
    let files = apt_source_files();
    let Some(file) = files
        .iter()
        .find(|(name, text)| names_backports(name, text))
        .map(|(name, _)| name.clone())
    else {
        return Err(format!("no {BACKPORTS} entry in apt's sources"));
    };
    let fetched = std::fs::read_dir(LISTS_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .any(|e| is_backports_list(&e.file_name().to_string_lossy()))
        })
        .unwrap_or(false);
    if fetched {
        Ok(file)
    } else {
        Err(format!(
            "{file} names {BACKPORTS} but apt has not fetched its package list"
        ))
    }
}

/// Every file apt reads its sources from, with its text: `sources.list` and the `.list` and
/// `.sources` files of `sources.list.d` (apt ignores other names there).
fn apt_source_files() -> Vec<(String, String)> {
    let mut paths = vec![Path::new(SOURCES_LIST).to_path_buf()];
    if let Ok(dir) = std::fs::read_dir(SOURCES_DIR) {
        let mut more: Vec<_> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        more.sort();
        paths.extend(more);
    }
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((p.display().to_string(), text))
        })
        .collect()
}

/// Whether apt reads file `name` and a line of it that is not a comment names the
/// bookworm-backports suite (a one-line `deb` entry or a deb822 `Suites:` field).
pub fn names_backports(name: &str, text: &str) -> bool {
    let read_by_apt = name == SOURCES_LIST || name.ends_with(".list") || name.ends_with(".sources");
    read_by_apt
        && text.lines().any(|l| {
            let l = l.trim_start();
            !l.starts_with('#') && l.split_whitespace().any(|w| w == BACKPORTS)
        })
}

/// Whether a file of `/var/lib/apt/lists` is a package list of bookworm-backports, e.g.
/// `HOST_debian_dists_bookworm-backports_main_binary-amd64_Packages.lz4`.
pub fn is_backports_list(file_name: &str) -> bool {
    file_name.contains(&format!("_dists_{BACKPORTS}_")) && file_name.contains("_Packages")
}

// ---------------------------------------------------------------------------------------
// The machine

/// The fields of `/etc/os-release` (os-release(5)) this module uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub codename: String,
}

impl OsRelease {
    pub fn is_bookworm(&self) -> bool {
        self.id == "debian" && self.codename == "bookworm"
    }

    /// Debian, Ubuntu or a derivative: apt-get and Debian's package names.
    pub fn uses_apt(&self) -> bool {
        let family = |s: &str| s == "debian" || s == "ubuntu";
        family(&self.id) || self.id_like.iter().any(|s| family(s))
    }

    fn read() -> OsRelease {
        OS_RELEASE
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| parse_os_release(&t))
            .unwrap_or_default()
    }
}

/// `KEY=value` lines, values optionally in single or double quotes with `\` escapes
/// (os-release(5)). Written here rather than taken from a crate: three keys of a
/// line-oriented file.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(raw.trim());
        match key.trim() {
            "ID" => os.id = value,
            "ID_LIKE" => os.id_like = value.split_whitespace().map(str::to_string).collect(),
            "VERSION_CODENAME" => os.codename = value,
            _ => {}
        }
    }
    os
}

fn unquote(raw: &str) -> String {
    let quoted = raw.len() >= 2
        && ((raw.starts_with('"') && raw.ends_with('"'))
            || (raw.starts_with('\'') && raw.ends_with('\'')));
    if !quoted {
        return raw.to_string();
    }
    let mut out = String::new();
    let mut chars = raw[1..raw.len() - 1].chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The bookworm-backports entry

/// The bookworm-backports entry made from the text of `debian.sources`: its first stanza
/// (skipping a leading paragraph of comments only) with `Suites:` replaced, comments and all
/// other fields kept as they are, as `.ci/run` made it with
/// `awk 'BEGIN { RS = "" } NR == 1' | sed 's/^Suites:.*/Suites: bookworm-backports/'`.
/// `None` without a stanza that has `URIs:`. The deb822 text is copied rather than parsed
/// and written again by a crate, so that nothing else in it changes.
pub fn backports_stanza(debian_sources: &str) -> Option<String> {
    let is_field = |l: &str| {
        !l.starts_with('#') && !l.starts_with([' ', '\t']) && l.contains(':') && !l.is_empty()
    };
    let field_name = |l: &str| l.split(':').next().unwrap_or_default().trim().to_string();
    let mut stanza: Vec<&str> = Vec::new();
    for line in debian_sources.lines().chain([""]) {
        if line.trim().is_empty() {
            if stanza.iter().any(|l| is_field(l)) {
                break;
            }
            stanza.clear();
        } else {
            stanza.push(line);
        }
    }
    if !stanza
        .iter()
        .any(|l| is_field(l) && field_name(l).eq_ignore_ascii_case("URIs"))
    {
        return None;
    }
    let mut out = String::new();
    let mut in_suites = false;
    for line in stanza {
        if is_field(line) {
            in_suites = field_name(line).eq_ignore_ascii_case("Suites");
            if in_suites {
                out.push_str(&format!("Suites: {BACKPORTS}\n"));
                continue;
            }
        } else if in_suites && line.starts_with([' ', '\t']) {
            // A continuation of the replaced Suites field.
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    Some(out)
}

/// The bookworm-backports entry made from the text of `sources.list` (for a system without
/// `debian.sources`): its first `deb` line with the suite replaced. `None` without one.
pub fn backports_line(sources_list: &str) -> Option<String> {
    for line in sources_list.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut out = vec!["deb"];
        let mut next = words.next();
        // Options: `[arch=amd64 signed-by=...]`, possibly spread over several words.
        if next.is_some_and(|w| w.starts_with('[')) {
            while let Some(w) = next {
                out.push(w);
                next = words.next();
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let (Some(uri), Some(_suite)) = (next, words.next()) else {
            continue;
        };
        out.push(uri);
        out.push(BACKPORTS);
        out.extend(words);
        return Some(format!("{}\n", out.join(" ")));
    }
    None
}

/// What apt's sources look like, for [`plan`].
#[derive(Debug, Default)]
pub struct Sources {
    /// Some file apt reads already names bookworm-backports.
    pub has_backports: bool,
    /// The text of `debian.sources`, if there is one.
    pub debian_sources: Option<String>,
    /// The text of `sources.list`, if there is one.
    pub sources_list: Option<String>,
}

impl Sources {
    fn read() -> Sources {
        Sources {
            has_backports: apt_source_files()
                .iter()
                .any(|(name, text)| names_backports(name, text)),
            debian_sources: std::fs::read_to_string(DEBIAN_SOURCES).ok(),
            sources_list: std::fs::read_to_string(SOURCES_LIST).ok(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The plan

/// One step of an installation.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write a file: `why` says what it was made from.
    Write {
        path: String,
        text: String,
        why: String,
    },
    /// Run a command (as root).
    Run(Vec<String>),
    /// Run a command as this user (`cargo install`, into the user's own cargo bin
    /// directory); `cargo` is the cargo running xtask (`$CARGO`) when there is one.
    User(Vec<String>),
}

/// The steps that install `missing` on a machine with apt: the bookworm-backports entry (on
/// Debian bookworm, when something comes from there and no entry exists), `apt-get update`,
/// then one `apt-get install` from the release and one from bookworm-backports, then each
/// `cargo install` (after the packages it builds with).
pub fn plan(
    missing: &[&Prereq],
    os: &OsRelease,
    sources: &Sources,
) -> std::result::Result<Vec<Step>, String> {
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let from_backports = |p: &Prereq| os.is_bookworm() && p.backports;
    let mut steps = Vec::new();
    if missing.iter().any(|p| from_backports(p)) && !sources.has_backports {
        steps.push(backports_entry(sources)?);
    }
    let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    steps.push(Step::Run(argv(&["apt-get", "update"])));
    let mut release: Vec<&str> = Vec::new();
    let mut backports: Vec<&str> = Vec::new();
    for p in missing {
        let into = if from_backports(p) {
            &mut backports
        } else {
            &mut release
        };
        for pkg in p.packages {
            if !into.contains(pkg) {
                into.push(pkg);
            }
        }
    }
    if !release.is_empty() {
        steps.push(Step::Run(argv(
            // Without the recommended desktop pieces (pulseaudio recommends rtkit and a
            // D-Bus user session, which a headless test server needs not).
            &[
                &["apt-get", "install", "-y", "--no-install-recommends"],
                &release[..],
            ]
            .concat(),
        )));
    }
    if !backports.is_empty() {
        steps.push(Step::Run(argv(
            &[
                &["apt-get", "install", "-y", "-t", BACKPORTS],
                &backports[..],
            ]
            .concat(),
        )));
    }
    for c in missing.iter().filter_map(|p| p.cargo) {
        steps.push(Step::User(c.install_command()));
    }
    Ok(steps)
}

fn backports_entry(sources: &Sources) -> std::result::Result<Step, String> {
    if let Some(text) = &sources.debian_sources {
        if let Some(stanza) = backports_stanza(text) {
            return Ok(Step::Write {
                path: BACKPORTS_SOURCES.into(),
                text: stanza,
                why: format!("the first stanza of {DEBIAN_SOURCES} with Suites: {BACKPORTS}"),
            });
        }
    }
    let head = match &sources.debian_sources {
        Some(_) => format!("{DEBIAN_SOURCES} has no stanza with URIs:"),
        None => format!("there is no {DEBIAN_SOURCES}"),
    };
    if let Some(line) = sources.sources_list.as_deref().and_then(backports_line) {
        return Ok(Step::Write {
            path: BACKPORTS_LIST.into(),
            text: line,
            why: format!(
                "{head}, so: the first `deb` line of {SOURCES_LIST} with the suite {BACKPORTS}"
            ),
        });
    }
    Err(format!(
        "cannot make a {BACKPORTS} entry for apt: {head} and {SOURCES_LIST} has no `deb` line"
    ))
}

// ---------------------------------------------------------------------------------------
// Running it

/// How the plan's commands get root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Root {
    /// This process is root.
    Already,
    /// Through sudo; `prompt`: sudo may ask for a password (`cargo xtask setup` at a
    /// terminal), otherwise `sudo -n`.
    Sudo { prompt: bool },
}

impl Root {
    /// The words put before a command.
    fn prefix(self) -> Vec<&'static str> {
        match self {
            Root::Already => Vec::new(),
            Root::Sudo { prompt: true } => vec!["sudo"],
            Root::Sudo { prompt: false } => vec!["sudo", "-n"],
        }
    }
}

fn is_root() -> bool {
    first_line("id", &["-u"]).is_ok_and(|u| u == "0")
}

/// Runs `step`, printing it first; a command that fails stops everything with its status
/// (its output went to the terminal).
fn run_step(step: &Step, root: Root) -> Result {
    match step {
        Step::Write { path, text, why } => {
            let indented: String = text.lines().map(|l| format!("    {l}\n")).collect();
            if root == Root::Already {
                eprintln!("==> write {path} ({why}):\n{indented}");
                std::fs::write(path, text).map_err(|e| format!("{path}: {e}"))?;
            } else {
                let words = [root.prefix(), vec!["tee", path]].concat();
                let shown = words.join(" ");
                eprintln!("==> {shown} ({why}):\n{indented}");
                let mut child = Command::new(words[0])
                    .args(&words[1..])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("`{shown}` cannot run: {e}"))?;
                if let Some(mut stdin) = child.stdin.take() {
                    stdin
                        .write_all(text.as_bytes())
                        .map_err(|e| format!("`{shown}`: {e}"))?;
                }
                let status = child.wait().map_err(|e| format!("`{shown}`: {e}"))?;
                if !status.success() {
                    return Err(format!("`{shown}` failed ({status})").into());
                }
            }
        }
        Step::Run(argv) => {
            // apt-get's packages must not ask questions (debconf).
            let mut words: Vec<&str> = root.prefix();
            if root != Root::Already {
                // sudo resets the environment; env(1) sets it for the command.
                words.extend(["env", "DEBIAN_FRONTEND=noninteractive"]);
            }
            words.extend(argv.iter().map(String::as_str));
            let shown = words.join(" ");
            eprintln!("==> {shown}");
            let status = Command::new(words[0])
                .args(&words[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map_err(|e| format!("`{shown}` cannot run: {e}"))?;
            if !status.success() {
                return Err(format!("`{shown}` failed ({status})").into());
            }
        }
        Step::User(argv) => {
            let shown = argv.join(" ");
            eprintln!("==> {shown}");
            let mut program = argv[0].clone();
            if program == "cargo" {
                if let Ok(cargo) = std::env::var("CARGO") {
                    program = cargo;
                }
            }
            let status = Command::new(&program)
                .args(&argv[1..])
                .status()
                .map_err(|e| format!("`{shown}` cannot run ({program}): {e}"))?;
            if !status.success() {
                return Err(format!("`{shown}` failed ({status})").into());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The commands

/// `CI=true` (or `1`): the environment of a continuous-integration run, where every test runs.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether the QEMU tests must run rather than skip.
pub fn qemu_required() -> bool {
    in_ci() || std::env::var_os(REQUIRE_QEMU_ENV).is_some()
}

/// A prerequisite with what was found or why it is missing.
type Found = (&'static Prereq, std::result::Result<String, String>);

/// Each prerequisite that applies here, with what was found or why it is missing.
fn survey(os: &OsRelease) -> Vec<Found> {
    PREREQS
        .iter()
        .filter(|p| (p.applies)(os))
        .map(|p| (p, (p.detect)()))
        .collect()
}

fn missing_of(found: &[Found]) -> Vec<(&'static Prereq, &str)> {
    found
        .iter()
        .filter_map(|(p, r)| r.as_ref().err().map(|why| (*p, why.as_str())))
        .collect()
}

/// One line per missing prerequisite: what it is, what for, why missing, which package, and
/// whether the tests can do without it.
fn describe(missing: &[(&Prereq, &str)], os: &OsRelease, qemu_required: bool) -> String {
    missing
        .iter()
        .map(|(p, why)| {
            let from = if p.packages.is_empty() {
                String::new()
            } else if p.cargo.is_some() {
                format!("; built with Debian's {}", p.packages.join(" "))
            } else if os.is_bookworm() && p.backports {
                format!("; Debian: {} from {BACKPORTS}", p.packages.join(" "))
            } else {
                format!("; Debian: {}", p.packages.join(" "))
            };
            let optional = if p.scope == Scope::Qemu && !qemu_required {
                " (optional: the QEMU tests skip without it)"
            } else {
                ""
            };
            format!("  - {} ({}): {why}{from}{optional}\n", p.name, p.purpose)
        })
        .collect()
}

/// Whether `cargo xtask test` stops for what is missing, or goes on with a warning.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Ready,
    /// Only optional prerequisites are missing: these, by name.
    GoOnWithout(Vec<&'static str>),
    /// Required prerequisites are missing: these, by name.
    Stop(Vec<&'static str>),
}

/// What is missing decides: anything of [`Scope::All`], or of [`Scope::Qemu`] when QEMU is
/// required, stops the tests.
pub fn verdict(missing: &[&'static Prereq], qemu_required: bool) -> Verdict {
    if missing.is_empty() {
        return Verdict::Ready;
    }
    let required: Vec<&str> = missing
        .iter()
        .filter(|p| p.scope == Scope::All || qemu_required)
        .map(|p| p.name)
        .collect();
    if required.is_empty() {
        Verdict::GoOnWithout(missing.iter().map(|p| p.name).collect())
    } else {
        Verdict::Stop(required)
    }
}

/// Why the test run stops, or a warning, for what `found` says is missing; `how`: what the
/// user does about it.
fn conclude(os: &OsRelease, found: &[Found], how: &str) -> Result {
    let missing = missing_of(found);
    let names: Vec<&'static Prereq> = missing.iter().map(|(p, _)| *p).collect();
    let required = qemu_required();
    match verdict(&names, required) {
        Verdict::Ready => {
            eprintln!("==> setup: everything the tests need is installed");
            Ok(())
        }
        Verdict::GoOnWithout(_) => {
            eprintln!(
                "warning: the QEMU tests will skip (CI=true or {REQUIRE_QEMU_ENV}=1 makes \
                 them required); missing:\n{}{how}",
                describe(&missing, os, required)
            );
            Ok(())
        }
        Verdict::Stop(_) => Err(format!(
            "the tests need what is not installed here:\n{}{how}",
            describe(&missing, os, required)
        )
        .into()),
    }
}

/// How this process could run apt-get as root, or why it cannot. `prompt`: sudo may ask for
/// a password.
fn root_for_apt(os: &OsRelease, prompt: bool) -> std::result::Result<Root, String> {
    let install_yourself = "Install them with the system's package manager (the Debian \
                            package names are given)";
    if !os.uses_apt() {
        let id = if os.id.is_empty() { "unknown" } else { &os.id };
        return Err(format!(
            "This is not Debian or Ubuntu (ID={id} in /etc/os-release). {install_yourself}."
        ));
    }
    if first_line("apt-get", &["--version"]).is_err() {
        return Err(format!("apt-get does not run here. {install_yourself}."));
    }
    if is_root() {
        return Ok(Root::Already);
    }
    if prompt {
        if first_line("sudo", &["--version"]).is_ok() {
            return Ok(Root::Sudo { prompt: true });
        }
        return Err("Neither root nor sudo: run `cargo xtask setup` as root.".into());
    }
    let sudo_ok = Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if sudo_ok {
        Ok(Root::Sudo { prompt: false })
    } else {
        Err(format!(
            "Installing needs root (sudo asks for a password here). Run\n\n    \
             {SETUP_COMMAND}\n\n(it installs them with apt-get, through sudo), then \
             `cargo xtask test` again."
        ))
    }
}

/// Runs the plan for `prereqs` with `root`.
fn install(prereqs: &[&Prereq], os: &OsRelease, root: Root) -> Result {
    let steps = plan(prereqs, os, &Sources::read())?;
    let names: Vec<&str> = prereqs.iter().map(|p| p.name).collect();
    eprintln!("==> setup: installing {}", names.join(", "));
    for step in &steps {
        run_step(step, root)?;
    }
    Ok(())
}

/// The first step of `cargo xtask test`: installs what is missing when it may, or stops
/// before any test saying what to run (QEMU, unless required, only warns).
pub fn before_tests() -> Result {
    let os = OsRelease::read();
    let found = survey(&os);
    let missing = missing_of(&found);
    let prereqs: Vec<&Prereq> = missing.iter().map(|(p, _)| *p).collect();
    let wanted = to_install(&prereqs, &os);
    if wanted.is_empty() {
        return conclude(&os, &found, "");
    }
    match root_for_apt(&os, false) {
        Ok(root) => {
            install(&wanted, &os, root)?;
            conclude(&os, &survey(&os), "")
        }
        Err(how) => conclude(&os, &found, &how),
    }
}

/// `cargo xtask setup [--check]`: reports every prerequisite; without `--check`, installs
/// what is missing (through sudo, which may ask for a password, when not root).
pub fn run(check: bool) -> Result {
    let os = OsRelease::read();
    let found = survey(&os);
    // What is missing is said once, below.
    for (p, what) in found
        .iter()
        .filter_map(|(p, r)| Some((p, r.as_ref().ok()?)))
    {
        eprintln!("ok  {}: {what}", p.name);
    }
    let missing = missing_of(&found);
    let prereqs: Vec<&Prereq> = missing.iter().map(|(p, _)| *p).collect();
    let wanted = to_install(&prereqs, &os);
    if check || wanted.is_empty() {
        let how = if wanted.is_empty() {
            String::new()
        } else {
            format!("Run `{SETUP_COMMAND}` to install them, then `cargo xtask test`.")
        };
        return conclude(&os, &found, &how);
    }
    let root = root_for_apt(&os, true)?;
    install(&wanted, &os, root)?;
    let after = survey(&os);
    let still: Vec<(&Prereq, &str)> = missing_of(&after)
        .into_iter()
        .filter(|(p, _)| wanted.iter().any(|w| w.name == p.name))
        .collect();
    if !still.is_empty() {
        return Err(format!(
            "still missing after installing:\n{}",
            describe(&still, &os, true)
        )
        .into());
    }
    conclude(&os, &after, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prereq(name: &str) -> &'static Prereq {
        PREREQS.iter().find(|p| p.name == name).unwrap()
    }

    fn words(s: &str) -> Step {
        Step::Run(s.split(' ').map(str::to_string).collect())
    }

    const BOOKWORM: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
        NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\n\
        VERSION_CODENAME=bookworm\nID=debian\nANSI_COLOR=\"1;31\"\n";

    /// The shape of Debian bookworm's `debian.sources` (a container image's, with its
    /// snapshot comments), with example hosts: two stanzas.
    const DEBIAN_SOURCES_TEXT: &str = "\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.example/archive/debian-security/20250520T000000Z
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn versions_parse() {
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
    }

    #[test]
    fn os_release_of_debian_ubuntu_and_others() {
        let bookworm = parse_os_release(BOOKWORM);
        assert_eq!(
            bookworm,
            OsRelease {
                id: "debian".into(),
                id_like: vec![],
                codename: "bookworm".into()
            }
        );
        assert!(bookworm.is_bookworm() && bookworm.uses_apt());

        let noble = parse_os_release(
            "NAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nID_LIKE=debian\n\
             UBUNTU_CODENAME=noble\nVERSION_CODENAME=noble\n",
        );
        assert_eq!(noble.id, "ubuntu");
        assert_eq!(noble.id_like, vec!["debian"]);
        assert_eq!(noble.codename, "noble");
        assert!(!noble.is_bookworm() && noble.uses_apt());

        let trixie = parse_os_release("ID=debian\nVERSION_CODENAME=trixie\n");
        assert!(!trixie.is_bookworm() && trixie.uses_apt());

        // Quotes of both kinds, an escape, a comment, derivatives by ID_LIKE.
        let mint = parse_os_release(
            "# comment\nID='linuxmint'\nID_LIKE=\"ubuntu debian\"\nVERSION_CODENAME=\"wi\\\"lma\"\n",
        );
        assert_eq!(mint.id, "linuxmint");
        assert_eq!(mint.id_like, vec!["ubuntu", "debian"]);
        assert_eq!(mint.codename, "wi\"lma");
        assert!(mint.uses_apt());

        let fedora = parse_os_release("NAME=\"Fedora Linux\"\nID=fedora\nVERSION_ID=41\n");
        assert!(!fedora.uses_apt() && !fedora.is_bookworm());
        assert_eq!(parse_os_release(""), OsRelease::default());
    }

    #[test]
    fn backports_stanza_is_the_first_stanza_with_another_suite() {
        assert_eq!(
            backports_stanza(DEBIAN_SOURCES_TEXT).as_deref(),
            Some(
                "Types: deb\n\
                 # http://snapshot.example/archive/debian/20250520T000000Z\n\
                 URIs: http://mirror.example/debian\n\
                 Suites: bookworm-backports\n\
                 Components: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
        );
        // A leading comment paragraph is skipped; a Suites field over two lines is replaced
        // whole; field names are case-insensitive (deb822); a Signed-By key block stays.
        let text = "# Written by the installer.\n# Edit with care.\n\n\n\
                    types: deb\nuris: http://mirror.example/debian\nsuites: bookworm\n \
                    bookworm-updates\ncomponents: main contrib\nSigned-By:\n \
                    -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n \
                    -----END PGP PUBLIC KEY BLOCK-----\n\nTypes: deb-src\n";
        assert_eq!(
            backports_stanza(text).as_deref(),
            Some(
                "types: deb\nuris: http://mirror.example/debian\nSuites: bookworm-backports\n\
                 components: main contrib\nSigned-By:\n \
                 -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n \
                 -----END PGP PUBLIC KEY BLOCK-----\n"
            )
        );
        assert_eq!(backports_stanza(""), None);
        assert_eq!(backports_stanza("# only a comment\n"), None);
        assert_eq!(backports_stanza("Types: deb\nSuites: bookworm\n"), None);
    }

    #[test]
    fn backports_line_from_sources_list() {
        let text = "# deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n\
                    deb-src http://mirror.example/debian bookworm main\n\
                    deb http://mirror.example/debian bookworm main non-free-firmware # main\n\
                    deb http://mirror.example/debian-security bookworm-security main\n";
        assert_eq!(
            backports_line(text).as_deref(),
            Some("deb http://mirror.example/debian bookworm-backports main non-free-firmware\n")
        );
        assert_eq!(
            backports_line(
                "deb [ arch=amd64 signed-by=/k.gpg ] http://m.example/d bookworm main\n"
            )
            .as_deref(),
            Some(
                "deb [ arch=amd64 signed-by=/k.gpg ] http://m.example/d bookworm-backports main\n"
            )
        );
        assert_eq!(
            backports_line("deb [arch=amd64] http://m.example/d bookworm main contrib\n")
                .as_deref(),
            Some("deb [arch=amd64] http://m.example/d bookworm-backports main contrib\n")
        );
        assert_eq!(backports_line("deb http://m.example/d\n"), None);
        assert_eq!(backports_line("# nothing\n"), None);
    }

    #[test]
    fn backports_entries_and_lists_are_recognised() {
        let d = "/etc/apt/sources.list.d/";
        let deb822 = "Types: deb\nURIs: http://m.example/debian\nSuites: bookworm-backports\n";
        assert!(names_backports(
            &format!("{d}bookworm-backports.sources"),
            deb822
        ));
        assert!(names_backports(
            &format!("{d}x.list"),
            "deb http://m.example/debian bookworm-backports main\n"
        ));
        assert!(names_backports(
            "/etc/apt/sources.list",
            "deb http://m.example/debian bookworm-backports main\n"
        ));
        // Commented out, another suite, or a file apt does not read.
        assert!(!names_backports(
            &format!("{d}x.list"),
            "# deb http://m.example/debian bookworm-backports main\n"
        ));
        assert!(!names_backports(
            &format!("{d}debian.sources"),
            DEBIAN_SOURCES_TEXT
        ));
        assert!(!names_backports(&format!("{d}x.sources.disabled"), deb822));
        assert!(is_backports_list(
            "m.example_debian_dists_bookworm-backports_main_binary-amd64_Packages.lz4"
        ));
        assert!(is_backports_list(
            "m.example_debian_dists_bookworm-backports_main_binary-amd64_Packages"
        ));
        assert!(!is_backports_list(
            "m.example_debian_dists_bookworm-backports_InRelease"
        ));
        assert!(!is_backports_list(
            "m.example_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
        ));
    }

    #[test]
    fn device_list_of_qemu() {
        // Excerpts of `qemu-system-x86_64 -device help` (QEMU 10.0).
        let help = "Controller/Bridge/Hub devices:\n\
            name \"pci-bridge\", bus PCI, desc \"Standard PCI Bridge\"\n\
            \n\
            Sound devices:\n\
            name \"AC97\", bus PCI, alias \"ac97\", desc \"Intel 82801AA AC97 Audio\"\n\
            name \"virtio-sound-device\", bus virtio-bus\n\
            name \"virtio-sound-pci\", bus PCI, alias \"virtio-sound\", desc \"Virtio Sound\"\n";
        assert_eq!(
            device_names(help),
            vec![
                "pci-bridge",
                "AC97",
                "virtio-sound-device",
                "virtio-sound-pci"
            ]
        );
        // QEMU 7.2 (bookworm's own) has no virtio-sound.
        let old = "Sound devices:\nname \"AC97\", bus PCI, alias \"ac97\", desc \"Intel\"\n\
                   name \"intel-hda\", bus PCI, desc \"Intel HD Audio Controller (ich6)\"\n";
        assert!(!device_names(old).contains(&"virtio-sound-pci"));
        assert!(device_names("").is_empty());
    }

    #[test]
    fn plan_on_a_fresh_bookworm() {
        let os = parse_os_release(BOOKWORM);
        let sources = Sources {
            has_backports: false,
            debian_sources: Some(DEBIAN_SOURCES_TEXT.into()),
            sources_list: None,
        };
        // Everything that applies on bookworm.
        let missing: Vec<&Prereq> = PREREQS.iter().filter(|p| (p.applies)(&os)).collect();
        assert_eq!(
            plan(&missing, &os, &sources).unwrap(),
            vec![
                Step::Write {
                    path: "/etc/apt/sources.list.d/bookworm-backports.sources".into(),
                    text: backports_stanza(DEBIAN_SOURCES_TEXT).unwrap(),
                    why: "the first stanza of /etc/apt/sources.list.d/debian.sources with \
                          Suites: bookworm-backports"
                        .into(),
                },
                words("apt-get update"),
                words(
                    "apt-get install -y --no-install-recommends gcc binutils g++ valgrind \
                     libclang-dev pulseaudio pulseaudio-utils jackd2 libasound2-dev pkg-config"
                ),
                words("apt-get install -y -t bookworm-backports linux-libc-dev qemu-system-x86"),
                // As this user, after the packages it is built with.
                Step::User(
                    "cargo install vhost-device-sound --version 0.3.0 --locked \
                     --no-default-features --features alsa-backend"
                        .split_whitespace()
                        .map(str::to_string)
                        .collect()
                ),
            ]
        );
    }

    /// vhost-device-sound alone: its build packages as root, then `cargo install` as the user;
    /// it is a QEMU-tests prerequisite, left alone where QEMU cannot run the tests.
    #[test]
    fn plan_for_vhost_device_sound() {
        let vhost = prereq("vhost-device-sound");
        let noble = parse_os_release("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n");
        let steps = plan(&[vhost], &noble, &Sources::default()).unwrap();
        assert_eq!(
            steps[..2],
            [
                words("apt-get update"),
                words("apt-get install -y --no-install-recommends libasound2-dev pkg-config"),
            ]
        );
        let Step::User(argv) = &steps[2] else {
            panic!("{steps:?}")
        };
        assert_eq!(argv.join(" "), "cargo install vhost-device-sound --version 0.3.0 --locked --no-default-features --features alsa-backend");
        assert_eq!(steps.len(), 3);
        assert!(vhost.installable(&noble));
        let kernel = prereq("a guest kernel for QEMU");
        assert!(to_install(&[vhost, kernel], &noble).is_empty());
    }

    #[test]
    fn backends_of_vhost_device_sound() {
        // `vhost-device-sound --help` (0.3.0, built with --features alsa-backend).
        let help = "A virtio-sound device using the vhost-user protocol.\n\n\
            Usage: vhost-device-sound --socket <SOCKET> --backend <BACKEND>\n\n\
            Options:\n      --socket <SOCKET>    vhost-user Unix domain socket path\n      \
            --backend <BACKEND>  audio backend to be used [possible values: null, alsa]\n  \
            -h, --help               Print help\n";
        assert_eq!(backend_names(help), ["null", "alsa"]);
        assert_eq!(
            backend_names("  --backend <BACKEND>  [possible values: null]\n"),
            ["null"]
        );
        assert!(backend_names("something else").is_empty());
        assert_eq!(VHOST_SOUND.version_line(), "vhost-device-sound 0.3.0");
    }

    /// Linux 6.1's header (bookworm's own) is replaced by bookworm-backports' newer one, the
    /// source entry made first when there is none.
    #[test]
    fn plan_for_an_old_uapi_header() {
        let os = parse_os_release(BOOKWORM);
        let sources = Sources {
            has_backports: false,
            debian_sources: Some(DEBIAN_SOURCES_TEXT.into()),
            sources_list: None,
        };
        let steps = plan(&[prereq("Linux UAPI headers")], &os, &sources).unwrap();
        assert!(
            matches!(&steps[0], Step::Write { path, .. } if path == BACKPORTS_SOURCES),
            "{steps:?}"
        );
        assert_eq!(
            steps[1..],
            [
                words("apt-get update"),
                words("apt-get install -y -t bookworm-backports linux-libc-dev")
            ]
        );
        // Elsewhere, the release's own (which the check then judges).
        let noble = parse_os_release("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n");
        assert_eq!(
            plan(&[prereq("Linux UAPI headers")], &noble, &Sources::default()).unwrap(),
            [
                words("apt-get update"),
                words("apt-get install -y --no-install-recommends linux-libc-dev")
            ]
        );
    }

    /// The structures of Linux's `include/uapi/linux/virtio_snd.h` as of 6.12 (virtio 1.3),
    /// in the header's order; the last six, the control elements, came in 6.9.
    const LINUX_6_12_STRUCTS: [&str; 21] = [
        "virtio_snd_config",
        "virtio_snd_hdr",
        "virtio_snd_event",
        "virtio_snd_query_info",
        "virtio_snd_info",
        "virtio_snd_jack_hdr",
        "virtio_snd_jack_info",
        "virtio_snd_jack_remap",
        "virtio_snd_pcm_hdr",
        "virtio_snd_pcm_info",
        "virtio_snd_pcm_set_params",
        "virtio_snd_pcm_xfer",
        "virtio_snd_pcm_status",
        "virtio_snd_chmap_hdr",
        "virtio_snd_chmap_info",
        "virtio_snd_ctl_hdr",
        "virtio_snd_ctl_info",
        "virtio_snd_ctl_enum_item",
        "virtio_snd_ctl_iec958",
        "virtio_snd_ctl_value",
        "virtio_snd_ctl_event",
    ];

    /// A header that declares `structs` (with both brace placements).
    fn fake_header(dir: &Path, structs: &[&str]) -> std::path::PathBuf {
        let text: String = structs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let brace = if i % 2 == 0 { " {" } else { "\n{" };
                format!("struct {s}{brace}\n\t__le32 x;\n}};\n\n")
            })
            .collect();
        let path = dir.join("virtio_snd.h");
        std::fs::write(&path, format!("#ifndef VIRTIO_SND_IF_H\n{text}#endif\n")).unwrap();
        path
    }

    #[test]
    fn the_uapi_header_must_have_the_control_elements() {
        let dir = tempfile::tempdir().unwrap();
        let current = fake_header(dir.path(), &LINUX_6_12_STRUCTS);
        assert_eq!(uapi_header(&current), Ok(current.display().to_string()));
        // Linux 6.1's (bookworm's own): no control elements.
        let old = fake_header(dir.path(), &LINUX_6_12_STRUCTS[..15]);
        let err = uapi_header(&old).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{} is older than virtio 1.3 (the spec's version): it lacks {}",
                old.display(),
                LINUX_6_12_STRUCTS[15..].join(", ")
            )
        );
        // A struct named only in a comment or a declaration is not defined.
        std::fs::write(
            &old,
            "/* struct virtio_snd_hdr { */\nstruct virtio_snd_hdr;\n",
        )
        .unwrap();
        assert!(uapi_header(&old)
            .unwrap_err()
            .contains("lacks virtio_snd_config, virtio_snd_hdr,"));
        assert_eq!(
            uapi_header(&dir.path().join("none.h")),
            Err(format!("no {}", dir.path().join("none.h").display()))
        );
    }

    #[test]
    fn plan_for_some_missing_things() {
        let bookworm = parse_os_release(BOOKWORM);
        let with_entry = Sources {
            has_backports: true,
            debian_sources: Some(DEBIAN_SOURCES_TEXT.into()),
            sources_list: None,
        };
        // Nothing missing: nothing to do, not even `apt-get update`.
        assert_eq!(plan(&[], &bookworm, &with_entry).unwrap(), vec![]);
        // Only libclang: no backports entry, no backports install.
        let no_entry = Sources {
            has_backports: false,
            ..with_entry
        };
        assert_eq!(
            plan(&[prereq("libclang")], &bookworm, &no_entry).unwrap(),
            vec![
                words("apt-get update"),
                words("apt-get install -y --no-install-recommends libclang-dev")
            ]
        );
        // The entry is there but apt never fetched it: only `apt-get update`.
        let with_entry = Sources {
            has_backports: true,
            ..no_entry
        };
        assert_eq!(
            plan(
                &[prereq("bookworm-backports in apt's sources")],
                &bookworm,
                &with_entry
            )
            .unwrap(),
            vec![words("apt-get update")]
        );
        // QEMU with the entry already there.
        assert_eq!(
            plan(&[prereq("QEMU")], &bookworm, &with_entry).unwrap(),
            vec![
                words("apt-get update"),
                words("apt-get install -y -t bookworm-backports qemu-system-x86")
            ]
        );
    }

    #[test]
    fn plan_elsewhere_installs_qemu_from_the_release() {
        let nothing = Sources::default();
        for os in [
            "ID=debian\nVERSION_CODENAME=trixie\n",
            "ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n",
        ] {
            let os = parse_os_release(os);
            assert_eq!(
                plan(&[prereq("QEMU"), prereq("C compiler")], &os, &nothing).unwrap(),
                vec![
                    words("apt-get update"),
                    words("apt-get install -y --no-install-recommends qemu-system-x86 gcc")
                ]
            );
        }
    }

    #[test]
    fn qemu_is_installed_only_where_the_qemu_tests_can_run() {
        let names = |v: Vec<&Prereq>| v.iter().map(|p| p.name).collect::<Vec<_>>();
        let qemu = prereq("QEMU");
        let clang = prereq("libclang");
        let source = prereq("bookworm-backports in apt's sources");
        let kernel = prereq("a guest kernel for QEMU");
        // Bookworm: the entry, QEMU and the rest.
        let bookworm = parse_os_release(BOOKWORM);
        assert_eq!(
            names(to_install(&[clang, qemu, source], &bookworm)),
            vec!["libclang", "QEMU", "bookworm-backports in apt's sources"]
        );
        // Elsewhere without a guest kernel: QEMU would only make the QEMU tests fail.
        let noble = parse_os_release("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n");
        assert_eq!(
            names(to_install(&[clang, qemu, kernel], &noble)),
            vec!["libclang"]
        );
        // ... with one (VIRTIO_SOUND_QEMU_KERNEL): the release's QEMU.
        assert_eq!(
            names(to_install(&[clang, qemu], &noble)),
            vec!["libclang", "QEMU"]
        );
        assert!(!kernel.installable(&noble) && !kernel.installable(&bookworm));
        assert!(source.installable(&bookworm) && !source.installable(&noble));
    }

    #[test]
    fn plan_falls_back_to_sources_list() {
        let os = parse_os_release(BOOKWORM);
        let sources = Sources {
            has_backports: false,
            debian_sources: None,
            sources_list: Some("deb http://mirror.example/debian bookworm main\n".into()),
        };
        assert_eq!(
            plan(&[prereq("QEMU")], &os, &sources).unwrap(),
            vec![
                Step::Write {
                    path: "/etc/apt/sources.list.d/bookworm-backports.list".into(),
                    text: "deb http://mirror.example/debian bookworm-backports main\n".into(),
                    why: "there is no /etc/apt/sources.list.d/debian.sources, so: the first \
                          `deb` line of /etc/apt/sources.list with the suite bookworm-backports"
                        .into(),
                },
                words("apt-get update"),
                words("apt-get install -y -t bookworm-backports qemu-system-x86"),
            ]
        );
        // Nothing to make an entry from.
        let none = Sources::default();
        assert_eq!(
            plan(&[prereq("QEMU")], &os, &none).unwrap_err(),
            "cannot make a bookworm-backports entry for apt: there is no \
             /etc/apt/sources.list.d/debian.sources and /etc/apt/sources.list has no `deb` line"
        );
    }

    #[test]
    fn only_qemu_missing_stops_only_when_required() {
        let qemu = prereq("QEMU");
        let source = prereq("bookworm-backports in apt's sources");
        let clang = prereq("libclang");
        assert_eq!(verdict(&[], true), Verdict::Ready);
        assert_eq!(
            verdict(&[qemu, source], false),
            Verdict::GoOnWithout(vec!["QEMU", "bookworm-backports in apt's sources"])
        );
        assert_eq!(
            verdict(&[qemu, source], true),
            Verdict::Stop(vec!["QEMU", "bookworm-backports in apt's sources"])
        );
        assert_eq!(
            verdict(&[clang, qemu], false),
            Verdict::Stop(vec!["libclang"])
        );
    }
}
