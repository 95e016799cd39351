//! A package that uses every part of the format.

use hpkg_writer::info::{GlobalWritableFile, User};
use hpkg_writer::tree::FileAttribute;
use hpkg_writer::*;

pub const T: u64 = 1_700_000_000;

pub fn version(s: &str, rev_optional: bool) -> Version {
    Version::parse(s, rev_optional).unwrap()
}

/// Deterministic pseudo-random bytes (xorshift), `n` of them.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn info() -> PackageInfo {
    PackageInfo {
        name: "sample".into(),
        summary: "A sample package".into(),
        description: "Every attribute\nof the format.".into(),
        vendor: "Sample \"Vendor\"".into(),
        packager: "Sam Packer <sam@example.com>".into(),
        base_package: String::new(),
        flags: hpkg_writer::format::FLAG_APPROVE_LICENSE,
        architecture: 4,
        version: version("1.2.3~beta1-4", false),
        copyrights: vec!["2024 Sample".into(), "2025 Sample".into()],
        licenses: vec!["MIT".into(), "Sample License".into()],
        urls: vec!["https://example.com/".into()],
        source_urls: vec!["Source <https://example.com/src>".into()],
        provides: vec![
            Provides {
                name: "sample".into(),
                version: Some(version("1.2.3~beta1-4", false)),
                compatible: None,
            },
            Provides {
                name: "lib:libsample".into(),
                version: Some(version("1.2", true)),
                compatible: Some(version("1", true)),
            },
        ],
        requires: vec![
            Expression {
                name: "haiku".into(),
                version: Some((4, version("r1~beta5", true))),
            },
            Expression {
                name: "lib:libz".into(),
                version: None,
            },
        ],
        supplements: vec![],
        conflicts: vec![Expression {
            name: "other".into(),
            version: Some((0, version("2", true))),
        }],
        freshens: vec![],
        replaces: vec!["oldsample".into()],
        global_writable_files: vec![GlobalWritableFile {
            path: "settings/sample".into(),
            is_directory: false,
            update_type: Some(0),
        }],
        user_settings_files: vec![UserSettingsFile {
            path: "settings/sample/user".into(),
            is_directory: false,
            template: Some("data/sample/user".into()),
        }],
        users: vec![User {
            name: "sampled".into(),
            real_name: "Sample Daemon".into(),
            home: "/boot/home/sampled".into(),
            shell: String::new(),
            groups: vec!["users".into()],
        }],
        groups: vec!["sampled".into()],
        post_install_scripts: vec!["boot/post-install/sample.sh".into()],
        pre_uninstall_scripts: vec![],
        checksum: String::new(),
        install_path: String::new(),
    }
}

pub fn entries() -> Vec<Entry> {
    let t = Times::all(T);
    let mut root = Vec::new();
    let mut add = |path: &str, e: Entry| add_path(&mut root, path, e, t).unwrap();
    add(
        "bin/sample",
        Entry::file("sample", noise(200_000, 1), 0o755, t),
    );
    add("bin/empty", Entry::file("empty", Vec::new(), 0o644, t));
    add("bin/link", Entry::symlink("link", "sample", t));
    add(
        "data/sample/eight",
        Entry::file("eight", b"12345678".to_vec(), 0o644, t),
    );
    add(
        "data/sample/nine",
        Entry::file("nine", b"123456789".to_vec(), 0o600, t),
    );
    add(
        "data/sample/user",
        Entry::file("user", b"key value\n".repeat(20), 0o644, t),
    );
    let mut with_attr = Entry::file("typed", vec![7; 100], 0o644, Times::all(T + 1));
    with_attr.attributes.push(FileAttribute {
        name: "BEOS:TYPE".into(),
        type_code: u32::from_be_bytes(*b"MIMS"),
        data: b"text/plain\0".to_vec(),
    });
    add("data/sample/typed", with_attr);
    add(
        "add-ons/empty-dir",
        Entry::directory("empty-dir", Vec::new(), t),
    );
    root
}

pub fn package() -> Package {
    Package {
        info: info(),
        entries: entries(),
    }
}
