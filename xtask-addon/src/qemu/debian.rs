//! Step 2, the guest kernel and busybox: Debian packages fetched with `apt-get download`
//! and extracted once into `target/qemu/cache/` (or given by `VIRTIO_SOUND_QEMU_KERNEL` /
//! `VIRTIO_SOUND_BUSYBOX`), and the kernel's UIO modules.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::prereq::{backports_stanza, BACKPORTS};
use super::OUT_DIR;
use crate::{root, Result};

/// A guest kernel to use instead of the downloaded one (a `vmlinuz`).
pub use xtask::setup::KERNEL_ENV;
/// A static busybox to use instead of the downloaded one.
pub const BUSYBOX_ENV: &str = "VIRTIO_SOUND_BUSYBOX";
/// The Debian metapackage the guest kernel comes from (in [`BACKPORTS`]).
pub const KERNEL_META: &str = "linux-image-cloud-amd64";
/// The Debian package with a static busybox.
pub const BUSYBOX_PKG: &str = "busybox-static";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_names_parse() {
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
}
