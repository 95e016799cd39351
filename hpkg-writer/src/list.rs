//! What `package list FILE.hpkg` prints (src/bin/package/command_list.cpp and
//! PackageInfoPrinter.h): `package-attributes:` and one tab-indented line per attribute,
//! then one line per entry, depth-first, indented two spaces per level: the name padded to
//! 32 columns less the indentation, the data size in 8 columns, the modification time, the
//! type (`-`, `d`, `l`) and `rwx` permissions, and `-> target` for a symlink.
//!
//! Haiku prints the time in the local time zone; this prints UTC, so the same package lists
//! the same everywhere.

use std::fmt::Write;

use crate::format::{ARCHITECTURES, FLAG_APPROVE_LICENSE, FLAG_SYSTEM_PACKAGE, UPDATE_TYPES};
use crate::tree::{Entry, Kind};
use crate::write::Package;

/// The listing of `pkg`.
pub fn list(pkg: &Package) -> String {
    let mut o = String::new();
    let i = &pkg.info;
    o.push_str("package-attributes:\n");
    let _ = writeln!(o, "\tname: {}", i.name);
    let _ = writeln!(o, "\tsummary: {}", i.summary);
    let _ = writeln!(o, "\tdescription: {}", i.description);
    let _ = writeln!(o, "\tvendor: {}", i.vendor);
    let _ = writeln!(o, "\tpackager: {}", i.packager);
    if !i.base_package.is_empty() {
        let _ = writeln!(o, "\tbase package: {}", i.base_package);
    }
    if i.flags != 0 {
        o.push_str("\tflags:\n");
        if i.flags & FLAG_APPROVE_LICENSE != 0 {
            o.push_str("\t\tapprove_license\n");
        }
        if i.flags & FLAG_SYSTEM_PACKAGE != 0 {
            o.push_str("\t\tsystem_package\n");
        }
    }
    let arch = ARCHITECTURES
        .get(usize::from(i.architecture))
        .copied()
        .unwrap_or("<invalid>");
    let _ = writeln!(o, "\tarchitecture: {arch}");
    let _ = writeln!(o, "\tversion: {}", i.version);
    for c in &i.copyrights {
        let _ = writeln!(o, "\tcopyright: {c}");
    }
    for l in &i.licenses {
        let _ = writeln!(o, "\tlicense: {l}");
    }
    for u in &i.urls {
        let _ = writeln!(o, "\tURL: {u}");
    }
    for u in &i.source_urls {
        let _ = writeln!(o, "\tsource URL: {u}");
    }
    for p in &i.provides {
        let _ = write!(o, "\tprovides: {}", p.name);
        if let Some(v) = &p.version {
            let _ = write!(o, " = {v}");
        }
        if let Some(v) = &p.compatible {
            let _ = write!(o, " (compatible >= {v})");
        }
        o.push('\n');
    }
    for (key, list) in [
        ("requires", &i.requires),
        ("supplements", &i.supplements),
        ("conflicts", &i.conflicts),
        ("freshens", &i.freshens),
    ] {
        for e in list {
            let _ = writeln!(o, "\t{key}: {e}");
        }
    }
    for r in &i.replaces {
        let _ = writeln!(o, "\treplaces: {r}");
    }
    for f in &i.global_writable_files {
        let _ = write!(o, "\tglobal writable file: {}", f.path);
        if f.is_directory {
            o.push_str(" directory");
        }
        match f.update_type.and_then(|u| UPDATE_TYPES.get(usize::from(u))) {
            Some(u) => {
                let _ = writeln!(o, " {u}");
            }
            None => o.push('\n'),
        }
    }
    for f in &i.user_settings_files {
        let _ = write!(o, "\tuser settings file: {}", f.path);
        if f.is_directory {
            o.push_str(" directory\n");
        } else if let Some(t) = f.template.as_deref().filter(|t| !t.is_empty()) {
            let _ = writeln!(o, " template {t}");
        } else {
            o.push('\n');
        }
    }
    for u in &i.users {
        let _ = writeln!(o, "\tuser: {}", u.name);
        if !u.real_name.is_empty() {
            let _ = writeln!(o, "\t\treal name: {}", u.real_name);
        }
        if !u.home.is_empty() {
            let _ = writeln!(o, "\t\thome:      {}", u.home);
        }
        if !u.shell.is_empty() {
            let _ = writeln!(o, "\t\tshell:     {}", u.shell);
        }
        for g in &u.groups {
            let _ = writeln!(o, "\t\tgroup:     {g}");
        }
    }
    for g in &i.groups {
        let _ = writeln!(o, "\tgroup: {g}");
    }
    for s in &i.post_install_scripts {
        let _ = writeln!(o, "\tpost-install script: {s}");
    }
    for s in &i.pre_uninstall_scripts {
        let _ = writeln!(o, "\tpre-uninstall script: {s}");
    }
    if !i.install_path.is_empty() {
        let _ = writeln!(o, "\tinstall path: {}", i.install_path);
    }
    if !i.checksum.is_empty() {
        let _ = writeln!(o, "\tchecksum: {}", i.checksum);
    }
    for e in &pkg.entries {
        entry(&mut o, e, 1);
    }
    o
}

fn rwx(bits: u32, special: bool) -> String {
    let mut s = String::new();
    s.push(if bits & 4 != 0 { 'r' } else { '-' });
    s.push(if bits & 2 != 0 { 'w' } else { '-' });
    s.push(match (bits & 1 != 0, special) {
        (true, true) => 's',
        (true, false) => 'x',
        _ => '-',
    });
    s
}

fn entry(o: &mut String, e: &Entry, level: usize) {
    let indent = (level - 1) * 2;
    let width = 32usize.saturating_sub(indent);
    let size = match &e.kind {
        Kind::File(d) => d.len(),
        _ => 0,
    };
    let (y, mo, d, h, mi, s) = civil(e.times.mtime.unwrap_or(0));
    let ty = match e.kind {
        Kind::File(_) => '-',
        Kind::Directory(_) => 'd',
        Kind::Symlink(_) => 'l',
    };
    let p = e.permissions;
    let _ = write!(
        o,
        "{:indent$}{:<width$}  {size:>8}  {y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}  {ty}{}{}{}",
        "",
        e.name,
        rwx(p >> 6, p & 0o4000 != 0),
        rwx(p >> 3, p & 0o2000 != 0),
        rwx(p, false),
    );
    if let Kind::Symlink(t) = &e.kind {
        let _ = write!(o, "  -> {t}");
    }
    o.push('\n');
    if let Kind::Directory(children) = &e.kind {
        for c in children {
            entry(o, c, level + 1);
        }
    }
}

/// UTC calendar time of `secs` since the epoch (Howard Hinnant's days-to-civil algorithm).
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}
