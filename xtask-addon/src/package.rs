//! `cargo xtask package`: `target/haiku/virtio_sound-VERSION-1-x86_64.hpkg`, the package a
//! Haiku user installs by dropping it into `/boot/system/packages` (or
//! `~/config/packages`), written with [`hpkg_writer`]; and `--list FILE.hpkg`.
//!
//! What goes in, and why:
//! - the add-on at `add-ons/kernel/drivers/audio/hmulti/virtio_sound`, mode 0755: where the
//!   kernel looks for drivers in each installation location (`kDriverPaths`,
//!   src/system/kernel/device_manager/legacy_drivers.cpp, the packaged
//!   `add-ons/kernel/drivers` of /boot/system and of ~/config, besides the non-packaged
//!   ones);
//! - the example settings as a template at `data/virtio_sound/virtio_sound`, declared as
//!   the user settings file `settings/kernel/drivers/virtio_sound` with that template. The
//!   driver reads `~/config/settings/kernel/drivers/virtio_sound` (`load_driver_settings`
//!   looks in `B_USER_SETTINGS_DIRECTORY`, src/system/libroot/os/driver_settings.cpp), a
//!   user settings file: Haiku's packaging policy (docs/develop/packages/
//!   PackagingPolicy.rst) says such a file is never installed on activation, only declared
//!   with a template under `data/<package>/`. A `global-writable-file` does not apply: it
//!   is extracted into the installation location's own `settings/` (for a system package
//!   /boot/system/settings, which the driver does not read) by the package daemon
//!   (src/servers/package/CommitTransactionHandler.cpp). So a user's settings are never
//!   touched;
//! - no license text: the license is `MIT`, which Haiku ships as
//!   `/system/data/licenses/MIT` (data/system/data/licenses/ in haiku/haiku), and
//!   `package create` asks for a `data/licenses/NAME` file only for a license Haiku does not
//!   ship (`PackageWriterImpl::_CheckLicenses`);
//! - `.PackageInfo`, last, as `package create` adds it;
//! - `requires haiku >= r1~beta5`: the oldest release the add-on supports is R1/beta5
//!   (`spec::kernel_import::HaikuRelease`), whose `haiku` package version is
//!   `r1~beta5_hrevNNNNN-1` (build/jam/BuildSetup `HAIKU_VERSION = r1~beta5` on the
//!   r1beta5 branch, to which build/jam/PackageRules appends the hrev), which is newer than
//!   `r1~beta5` by Haiku's version comparison (a longer pre-release after the same prefix).
//!
//! Every entry's times are `SOURCE_DATE_EPOCH`, or else the last commit's time, so the same
//! sources give the same bytes.

use std::path::{Path, PathBuf};

use hpkg_writer::{
    add_path, Entry, Expression, Options, Package, PackageInfo, Provides, Times, UserSettingsFile,
    Version,
};

use crate::{root, Result};

/// Where the add-on goes in the package.
pub const PACKAGED_ADDON: &str = "add-ons/kernel/drivers/audio/hmulti/virtio_sound";
/// The settings template in the package.
pub const SETTINGS_TEMPLATE: &str = "data/virtio_sound/virtio_sound";
/// The user settings file it is the template of, relative to ~/config.
pub const USER_SETTINGS_FILE: &str = "settings/kernel/drivers/virtio_sound";
/// The `haiku` version the package requires at least: R1/beta5.
pub const OLDEST_HAIKU: &str = "r1~beta5";
/// The licenses Haiku ships in /system/data/licenses (data/system/data/licenses/ in
/// haiku/haiku): a package declaring one of these needs no license file of its own.
pub const HAIKU_LICENSES: [&str; 35] = [
    "Anti-Grain Geometry",
    "Apache v2",
    "Artistic",
    "Artistic v2.0",
    "BSD (2-clause)",
    "BSD (3-clause)",
    "BSD (4-clause)",
    "Be Sample Code License",
    "Bitstream Charter",
    "CDDL v1",
    "CQuantizer",
    "DEC",
    "GNU GPL font exception",
    "GNU GPL v1",
    "GNU GPL v2",
    "GNU GPL v3",
    "GNU LGPL v2",
    "GNU LGPL v2.1",
    "GNU LGPL v3",
    "ISC",
    "Intel (2xxx firmware)",
    "Intel (ACPICA)",
    "LibJPEG",
    "LibPNG",
    "MAPM",
    "MIT",
    "MIT (no promotion)",
    "MPL v1.1",
    "MPL v2.0",
    "Marvell (firmware)",
    "NewOS",
    "OpenGroup",
    "Public Domain",
    "SIL Open Font License v1.1",
    "Zlib",
];

#[derive(clap::Args)]
pub struct PackageArgs {
    /// Print FILE.hpkg's attributes and contents as Haiku's `package list` does (times in
    /// UTC), and write nothing.
    #[arg(long, value_name = "FILE.hpkg")]
    pub list: Option<PathBuf>,
    /// Package this add-on instead of target/haiku/virtio_sound.
    #[arg(long, value_name = "FILE")]
    pub addon: Option<PathBuf>,
    /// The version to package (default: the workspace's; a `-pre-release` is written
    /// Haiku's way, `~pre-release`). The package revision is 1.
    #[arg(long)]
    pub version: Option<String>,
    /// Where to write the package (default: target/haiku).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// The workspace's version (this crate takes it from the workspace).
pub fn workspace_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// A Cargo-style version as a Haiku package version with revision 1: `X.Y.Z[-pre]` becomes
/// `X.Y.Z[~pre]-1`; anything Haiku's grammar refuses is an error naming the column.
pub fn haiku_version(cargo_version: &str) -> Result<Version> {
    let text = match cargo_version.split_once('-') {
        Some((core, pre)) => format!("{core}~{pre}-1"),
        None => format!("{cargo_version}-1"),
    };
    Version::parse(&text, false)
        .map_err(|e| format!("package version \"{cargo_version}\" (as {text}): {e}").into())
}

/// `SOURCE_DATE_EPOCH`, or the last commit's time.
pub fn source_date() -> Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .map_err(|_| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds").into());
    }
    let out = std::process::Command::new("git")
        .args(["log", "-1", "--format=%ct"])
        .current_dir(root())
        .output()
        .map_err(|e| format!("git log (for the package's times): {e}; set SOURCE_DATE_EPOCH"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match (out.status.success(), text.trim().parse()) {
        (true, Ok(t)) => Ok(t),
        _ => Err(format!(
            "no commit time for the package's times ({}); set SOURCE_DATE_EPOCH",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into()),
    }
}

/// The package's attributes.
pub fn info(version: Version) -> Result<PackageInfo> {
    let license = env!("CARGO_PKG_LICENSE");
    if !HAIKU_LICENSES.contains(&license) {
        return Err(format!(
            "license {license:?} is not one Haiku ships in /system/data/licenses: the package \
             would need its text at data/licenses/{license}"
        )
        .into());
    }
    let urls: Vec<String> = [env!("CARGO_PKG_HOMEPAGE"), env!("CARGO_PKG_REPOSITORY")]
        .into_iter()
        .filter(|u| !u.is_empty())
        .map(String::from)
        .collect();
    Ok(PackageInfo {
        name: "virtio_sound".into(),
        summary: "Driver for the virtio sound device".into(),
        description: "Plays and records audio through the virtio sound device of a virtual \
            machine (virtio device 25, PCI 1af4:1059, such as QEMU's virtio-sound-pci) with \
            Haiku's media services, at every rate and format the host offers. Settings: copy \
            /boot/system/data/virtio_sound/virtio_sound to \
            ~/config/settings/kernel/drivers/virtio_sound and edit it."
            .into(),
        vendor: "The virtio_sound project".into(),
        packager: "The virtio_sound build (cargo xtask package)".into(),
        architecture: 4, // x86_64
        copyrights: vec!["The virtio_sound contributors".into()],
        licenses: vec![license.into()],
        urls,
        provides: vec![Provides {
            name: "virtio_sound".into(),
            version: Some(version.clone()),
            compatible: None,
        }],
        requires: vec![Expression {
            name: "haiku".into(),
            // B_PACKAGE_RESOLVABLE_OP_GREATER_EQUAL
            version: Some((4, Version::parse(OLDEST_HAIKU, true)?)),
        }],
        user_settings_files: vec![UserSettingsFile {
            path: USER_SETTINGS_FILE.into(),
            is_directory: false,
            template: Some(SETTINGS_TEMPLATE.into()),
        }],
        version,
        ..PackageInfo::default()
    })
}

/// The package of `addon_bytes`.
pub fn package(addon_bytes: Vec<u8>, version: Version, time: u64) -> Result<Package> {
    let info = info(version)?;
    let t = Times::all(time);
    let mut entries = Vec::new();
    let leaf = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    add_path(
        &mut entries,
        PACKAGED_ADDON,
        Entry::file(&leaf(PACKAGED_ADDON), addon_bytes, 0o755, t),
        t,
    )?;
    add_path(
        &mut entries,
        SETTINGS_TEMPLATE,
        Entry::file(
            &leaf(SETTINGS_TEMPLATE),
            crate::haiku::EXAMPLE_SETTINGS.as_bytes().to_vec(),
            0o644,
            t,
        ),
        t,
    )?;
    let package_info = info.to_package_info_text().into_bytes();
    entries.push(Entry::file(".PackageInfo", package_info, 0o644, t));
    Ok(Package { info, entries })
}

/// Writes the package of the add-on at `addon` into `out_dir`; returns its path.
pub fn write(addon: &Path, version: Option<&str>, out_dir: &Path) -> Result<PathBuf> {
    let version = haiku_version(version.unwrap_or(workspace_version()))?;
    let bytes = std::fs::read(addon).map_err(|e| {
        format!(
            "add-on {}: {e} (build it with cargo xtask build-haiku, or name one with --addon)",
            addon.display()
        )
    })?;
    let pkg = package(bytes, version, source_date()?)?;
    let bytes = hpkg_writer::write(&pkg, Options::default())?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("{}: cannot create the directory: {e}", out_dir.display()))?;
    let path = out_dir.join(pkg.info.file_name());
    hpkg_writer::write_file(&path, &bytes)
        .map_err(|e| format!("{}: cannot write the package: {e}", path.display()))?;
    Ok(path)
}

/// `cargo xtask package`.
pub fn run(args: &PackageArgs) -> Result {
    if let Some(file) = &args.list {
        let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let pkg = hpkg_writer::read(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
        print!("{}", hpkg_writer::list::list(&pkg));
        return Ok(());
    }
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| root().join(crate::haiku::OUT_DIR));
    let addon = args
        .addon
        .clone()
        .unwrap_or_else(|| root().join(crate::haiku::OUT_DIR).join(crate::haiku::ADDON));
    let path = write(&addon, args.version.as_deref(), &out_dir)?;
    println!("package: {}", path.display());
    Ok(())
}
