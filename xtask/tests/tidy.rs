//! Conventions made into tests.

use std::path::Path;
use std::process::Command;

/// Nothing committed names a path of the machine it was written on or a package registry.
#[test]
fn no_machine_paths_or_registry_hosts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("git")
        .current_dir(&root)
        .args(["ls-files", "-co", "--exclude-standard"])
        .output()
        .unwrap();
    let files = String::from_utf8(out.stdout).unwrap();
    let forbidden = [
        ["/wo", "rk/"].concat(),
        ["/ro", "ot/"].concat(),
        ["crates", ".io"].concat(),
        ["pypi", ".org"].concat(),
        ["deb.", "debian.org"].concat(),
        ["registry", ".npmjs"].concat(),
    ];
    let mut hits = Vec::new();
    for f in files.lines() {
        if f == "Cargo.lock" {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(f)) else {
            continue;
        };
        for (i, line) in text.lines().enumerate() {
            for bad in &forbidden {
                if line.contains(bad.as_str()) {
                    hits.push(format!("{f}:{}: {bad}", i + 1));
                }
            }
            // An absolute home directory of this machine; relative paths that happen to
            // contain it (Haiku's /boot/home, an install tree's home/) are fine.
            let home = ["/ho", "me/"].concat();
            for (at, _) in line.match_indices(&home) {
                let before = line[..at].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || "_-./".contains(c))) {
                    hits.push(format!("{f}:{}: {home}", i + 1));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "machine paths or registry hosts committed:\n{}",
        hits.join("\n")
    );
}
