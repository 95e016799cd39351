//! Step 1, prerequisites: `qemu-system-x86_64` 8.2 or newer with `virtio-sound-pci`, and
//! how to install it on Debian bookworm when it is missing.

use std::process::{Command, Stdio};

// The facts `cargo xtask setup` needs too live in the front door's setup module.
pub use xtask::setup::{qemu_version, BACKPORTS, MIN_QEMU, QEMU};

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
    fn backports_hint_names_the_suite() {
        let h = backports_stanza();
        assert!(h.contains("Suites: bookworm-backports"), "{h}");
        assert!(h.contains("apt-get update"), "{h}");
    }
}
