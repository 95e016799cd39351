//! Step 1, prerequisites: `qemu-system-x86_64` 8.2 or newer with `virtio-sound-pci`, and
//! how to install it on Debian bookworm when it is missing.

use std::process::{Command, Stdio};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// The oldest QEMU with `virtio-sound-pci`.
pub const MIN_QEMU: (u32, u32, u32) = (8, 2, 0);
/// The Debian suite QEMU and the guest kernel come from.
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

/// The lines a user adds to apt's sources for bookworm-backports: the first stanza of
/// `/etc/apt/sources.list.d/debian.sources` with its suite replaced, when that file exists.
pub fn backports_stanza() -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn backports_hint_names_the_suite() {
        let h = backports_stanza();
        assert!(h.contains("Suites: bookworm-backports"), "{h}");
        assert!(h.contains("apt-get update"), "{h}");
    }
}
