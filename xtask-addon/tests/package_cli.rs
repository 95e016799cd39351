//! `cargo xtask package` as a user runs it: the package of an add-on (a stand-in file here,
//! so no add-on is built), read back with `hpkg_writer`'s checking reader; `--list`; and
//! bad input that must leave no file behind.

use std::path::Path;
use std::process::{Command, Output};

use hpkg_writer::{Kind, Package};

/// The file name BuildingPackages.rst ("Package File Names") gives the package of the
/// workspace's version (a plain X.Y.Z here), revision 1, for x86_64.
fn expected_name() -> String {
    format!("virtio_sound-{}-1-x86_64.hpkg", env!("CARGO_PKG_VERSION"))
}

fn xtask(args: &[&str], epoch: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask-addon"));
    c.arg("package")
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    match epoch {
        Some(e) => c.env("SOURCE_DATE_EPOCH", e),
        None => c.env_remove("SOURCE_DATE_EPOCH"),
    };
    c.output().expect("run xtask-addon")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Packages `addon` into `out`, returning the package's bytes.
fn package(addon: &Path, out: &Path, epoch: Option<&str>) -> Vec<u8> {
    let o = xtask(
        &[
            "--addon",
            addon.to_str().unwrap(),
            "--out-dir",
            out.to_str().unwrap(),
        ],
        epoch,
    );
    assert!(o.status.success(), "{}", text(&o));
    let path = out.join(expected_name());
    assert!(text(&o).contains(path.to_str().unwrap()), "{}", text(&o));
    std::fs::read(path).unwrap()
}

fn find<'a>(entries: &'a [hpkg_writer::Entry], path: &str) -> &'a hpkg_writer::Entry {
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    let e = entries
        .iter()
        .find(|e| e.name == first)
        .unwrap_or_else(|| panic!("{first} missing"));
    match (&e.kind, rest) {
        (_, "") => e,
        (Kind::Directory(c), rest) => find(c, rest),
        _ => panic!("{first} is not a directory"),
    }
}

fn fake_addon(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = dir.join("virtio_sound");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
fn the_package_holds_the_addon_the_settings_template_and_its_attributes() {
    let dir = tempfile::tempdir().unwrap();
    let (addon, addon_bytes) = fake_addon(dir.path());
    let out = dir.path().join("out");
    let bytes = package(&addon, &out, Some("1700000000"));
    let Package { info, entries } = hpkg_writer::read(&bytes).unwrap();

    let a = find(&entries, "add-ons/kernel/drivers/audio/hmulti/virtio_sound");
    assert_eq!(a.kind, Kind::File(addon_bytes), "the add-on, byte for byte");
    assert_eq!(a.permissions, 0o755);
    assert_eq!(a.times.mtime, Some(1_700_000_000));
    let Kind::File(template) = &find(&entries, "data/virtio_sound/virtio_sound").kind else {
        panic!("the template is not a file")
    };
    let template = String::from_utf8(template.clone()).unwrap();
    // Every key the README documents for the settings file.
    for key in [
        "frames_per_buffer",
        "buffer_count",
        "max_rate",
        "log_level",
        "stop_padding_ms",
    ] {
        assert!(template.lines().any(|l| l.starts_with(key)), "{key}");
    }
    // package create's .PackageInfo, last in the root.
    assert_eq!(entries.last().unwrap().name, ".PackageInfo");
    let Kind::File(pi) = &entries.last().unwrap().kind else {
        panic!()
    };
    let pi = String::from_utf8(pi.clone()).unwrap();
    assert!(pi.contains("name\t\"virtio_sound\"\n"), "{pi}");
    assert!(pi.contains("\thaiku >= r1~beta5\n"), "{pi}");
    // No settings file outside data/: a user's settings are never installed over.
    assert!(entries.iter().all(|e| e.name != "settings"));

    assert_eq!(info.name, "virtio_sound");
    assert_eq!(
        info.version.to_string(),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        info.architecture, 4,
        "x86_64 (B_PACKAGE_ARCHITECTURE_X86_64)"
    );
    assert_eq!(info.licenses, ["MIT"]);
    for (field, value) in [
        ("summary", &info.summary),
        ("description", &info.description),
        ("vendor", &info.vendor),
        ("packager", &info.packager),
    ] {
        assert!(!value.is_empty(), "{field} is empty");
    }
    assert!(!info.copyrights.is_empty());
    assert_eq!(info.provides.len(), 1);
    assert_eq!(info.provides[0].name, "virtio_sound");
    assert_eq!(info.provides[0].version.as_ref(), Some(&info.version));
    assert_eq!(
        info.requires
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["haiku>=r1~beta5"]
    );
    assert_eq!(info.user_settings_files.len(), 1);
    let u = &info.user_settings_files[0];
    assert_eq!(u.path, "settings/kernel/drivers/virtio_sound");
    assert_eq!(
        u.template.as_deref(),
        Some("data/virtio_sound/virtio_sound")
    );
    assert!(info.global_writable_files.is_empty());
}

#[test]
fn the_same_sources_give_the_same_package() {
    let dir = tempfile::tempdir().unwrap();
    let (addon, _) = fake_addon(dir.path());
    let a = package(&addon, &dir.path().join("a"), Some("1700000000"));
    let b = package(&addon, &dir.path().join("b"), Some("1700000000"));
    assert!(a == b);
    let c = package(&addon, &dir.path().join("c"), Some("1700000001"));
    assert!(a != c);
    // Without SOURCE_DATE_EPOCH: the last commit's time.
    let git = Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let commit: u64 = String::from_utf8_lossy(&git.stdout).trim().parse().unwrap();
    let d = package(&addon, &dir.path().join("d"), None);
    let pkg = hpkg_writer::read(&d).unwrap();
    assert_eq!(pkg.entries[0].times.mtime, Some(commit));
}

#[test]
fn list_prints_what_package_list_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (addon, _) = fake_addon(dir.path());
    let out = dir.path().join("out");
    package(&addon, &out, Some("1700000000"));
    let file = out.join(expected_name());
    let o = xtask(&["--list", file.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", text(&o));
    let listing = String::from_utf8_lossy(&o.stdout);
    for line in [
        "package-attributes:",
        "\tname: virtio_sound",
        "\tarchitecture: x86_64",
        "\tlicense: MIT",
        "\trequires: haiku>=r1~beta5",
        "\tuser settings file: settings/kernel/drivers/virtio_sound template data/virtio_sound/virtio_sound",
        // 1700000000 is 2023-11-14 22:13:20 UTC; level 6, 10 spaces of indentation.
        "          virtio_sound              100000  2023-11-14 22:13:20  -rwxr-xr-x",
        "add-ons                                  0  2023-11-14 22:13:20  drwxr-xr-x",
    ] {
        assert!(listing.lines().any(|l| l == line), "no line {line:?} in\n{listing}");
    }
    assert!(listing.contains(&format!(
        "\tprovides: virtio_sound = {}-1\n",
        env!("CARGO_PKG_VERSION")
    )));
}

#[test]
fn a_truncated_package_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (addon, _) = fake_addon(dir.path());
    let bytes = package(&addon, dir.path(), Some("1700000000"));
    let cut = dir.path().join("cut.hpkg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let o = xtask(&["--list", cut.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: {}: truncated", cut.display())),
        "{err}"
    );
}

#[test]
fn bad_input_is_an_error_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (addon, _) = fake_addon(dir.path());
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let addon = addon.to_str().unwrap();
    let o_dir = out.to_str().unwrap();
    let missing = dir.path().join("missing");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let under_file = blocker.join("out");
    for (args, says) in [
        (
            vec!["--addon", missing.to_str().unwrap(), "--out-dir", o_dir],
            format!("add-on {}: No such file", missing.display()),
        ),
        (
            vec![
                "--addon",
                addon,
                "--out-dir",
                o_dir,
                "--version",
                "1.0+build",
            ],
            "package version \"1.0+build\" (as 1.0+build-1): version \"1.0+build-1\", column 4: \
             invalid character in the minor version"
                .to_string(),
        ),
        (
            vec!["--addon", addon, "--out-dir", o_dir, "--version", "1..2"],
            "column 3: expected a minor version".to_string(),
        ),
        (
            vec!["--addon", addon, "--out-dir", under_file.to_str().unwrap()],
            format!("{}: cannot create the directory", under_file.display()),
        ),
    ] {
        let o = xtask(&args, Some("1700000000"));
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&says), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "{args:?} left a file"
        );
    }
    // A directory where the package should go: the rename fails, the temporary is gone.
    std::fs::create_dir(out.join(expected_name())).unwrap();
    let o = xtask(&["--addon", addon, "--out-dir", o_dir], Some("1700000000"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("cannot write the package"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "a temporary was left"
    );
}
