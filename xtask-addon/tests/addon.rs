//! The README's `cargo xtask build-haiku`: the add-on builds, passes the audit, and the
//! install tree mirrors where the files go in a Haiku guest.

use std::path::Path;
use std::process::Command;

#[test]
fn build_haiku_produces_an_audited_addon_and_install_tree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
        .arg("build-haiku")
        .current_dir(&root)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("none below rsp"), "{text}");
    // Frame pointers: the audit's finding on the add-on, then the build's on its unstripped
    // copy, by name.
    assert!(
        text.contains("none calls without it or uses rbp otherwise"),
        "{text}"
    );
    assert!(
        text.contains("are leaves of the toolchain's precompiled core/alloc"),
        "{text}"
    );
    let addon = root.join("target/haiku/virtio_sound");
    let installed = root.join(
        "target/haiku/install/system/non-packaged/add-ons/kernel/drivers/audio/hmulti/virtio_sound",
    );
    assert_eq!(
        std::fs::read(&addon).unwrap(),
        std::fs::read(&installed).unwrap()
    );
    let settings = std::fs::read_to_string(
        root.join("target/haiku/install/home/config/settings/kernel/drivers/virtio_sound"),
    )
    .unwrap();
    for key in ["frames_per_buffer", "buffer_count", "max_rate", "log_level"] {
        assert!(
            settings.lines().any(|l| l.starts_with(key)),
            "{key} missing from the example settings"
        );
    }
    // The audit on its own accepts the file too.
    let audit = Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
        .args(["audit"])
        .arg(&addon)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    // The exports Haiku looks up, and only kernel imports.
    let report = String::from_utf8_lossy(&audit.stdout);
    assert!(report.contains("modules OBJECT"), "{report}");
    assert!(report.contains("frame pointers: "), "{report}");
    assert!(report.contains("module_dependencies OBJECT"), "{report}");
}
