//! Step 3, the initramfs: `sim-guest` built statically, the guest's `/init`, and the newc
//! cpio archive with busybox, the add-on, the kernel modules and the run's files.

use std::io::Write;
use std::path::PathBuf;

use cpio::newc::ModeFileType;
use cpio::NewcBuilder;

use super::debian::GUEST_MODULE_DIR;
use super::{EXIT_MARK, GUEST_ADDON, OUT_DIR};
use crate::{cargo, root, Result};

/// A prebuilt `sim-guest` (static) to use instead of building one.
pub const SIM_GUEST_ENV: &str = "VIRTIO_SOUND_SIM_GUEST";
const TARGET: &str = "x86_64-unknown-linux-gnu";

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

/// A newc ("070701") cpio archive, the format of Linux's initramfs, written with the `cpio`
/// crate. Names are stored without the leading `/`; owner root, mtime 0 and inode numbers
/// counting from 1, so the same inputs give the same bytes.
#[derive(Default)]
struct Archive {
    buf: Vec<u8>,
    ino: u32,
}

impl Archive {
    /// One entry: `perm` is e.g. 0o755, `rdev` a device node's (major, minor).
    fn entry(
        &mut self,
        name: &str,
        kind: ModeFileType,
        perm: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result {
        let name = name.trim_start_matches('/');
        let size = u32::try_from(data.len())
            .map_err(|_| format!("/{name}: {} bytes do not fit a cpio archive", data.len()))?;
        self.ino += 1;
        let mut w = NewcBuilder::new(name)
            .ino(self.ino)
            .mode(perm)
            .set_mode_file_type(kind)
            .nlink(nlink)
            .rdev_major(rdev.0)
            .rdev_minor(rdev.1)
            .write(&mut self.buf, size);
        w.write_all(data)
            .and_then(|()| w.finish())
            .map_err(|e| format!("/{name} in the initramfs: {e}"))?;
        Ok(())
    }

    fn dir(&mut self, name: &str, perm: u32) -> Result {
        self.entry(name, ModeFileType::Directory, perm, 2, (0, 0), &[])
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> Result {
        self.entry(name, ModeFileType::Regular, perm, 1, (0, 0), data)
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result {
        self.entry(name, ModeFileType::Char, perm, 1, (major, minor), &[])
    }

    /// The archive, with its `TRAILER!!!`.
    fn finish(mut self) -> Result<Vec<u8>> {
        cpio::newc::trailer(&mut self.buf).map_err(|e| format!("initramfs trailer: {e}"))?;
        Ok(self.buf)
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
) -> Result<Vec<u8>> {
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
    let mut c = Archive::default();
    for d in &dirs {
        c.dir(d, 0o755)?;
    }
    // The kernel gives /init /dev/console as its standard streams: make sure it exists
    // before devtmpfs is mounted.
    c.char_dev("dev/console", 0o600, 5, 1)?;
    for (name, perm, data) in fixed {
        c.file(&name, perm, data)?;
    }
    for (path, data) in files {
        c.file(&norm(path), 0o644, data)?;
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    /// File types of `st_mode` (Linux's include/uapi/linux/stat.h).
    const S_IFDIR: u32 = 0o040000;
    const S_IFREG: u32 = 0o100000;
    const S_IFCHR: u32 = 0o020000;

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
        .unwrap()
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
        )
        .unwrap();
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
    fn busybox_cpio_lists_the_archive() {
        // The host's busybox, or else the guest's (Debian's busybox-static, fetched once).
        let bb = match Path::new("/bin/busybox") {
            bb if bb.exists() => bb.to_path_buf(),
            _ => match super::super::debian::guest_kernel_and_busybox() {
                Ok((_, bb)) => bb,
                Err(e) => {
                    eprintln!("no busybox ({e}): skipping the busybox cpio listing");
                    return;
                }
            },
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cpio");
        std::fs::write(&path, sample()).unwrap();
        let out = Command::new(&bb)
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
}
