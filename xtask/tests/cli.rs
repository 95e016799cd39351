//! The front door as a user runs it: exit codes and output of the built `xtask` binary.

mod common;

use common::{text, xtask};

#[test]
fn generated_files_are_fresh() {
    let o = xtask(&["gen", "--check"]);
    assert!(
        o.status.success(),
        "run `cargo xtask gen` and commit:\n{}",
        text(&o)
    );
}

#[test]
fn layout_json_uses_c_names() {
    let o = xtask(&["layout", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["structs"]["multi_description"]["size"], 272);
    assert_eq!(
        v["structs"]["multi_description"]["fields"]["channels"]["offset"],
        104
    );
    assert_eq!(
        v["structs"]["multi_description"]["fields"]["channels"]["size"],
        8
    );
    assert_eq!(v["structs"]["virtio_snd_pcm_info"]["size"], 32);
    assert_eq!(v["structs"]["virtio_snd_pcm_info"]["align"], 8);
    assert_eq!(v["structs"]["virtio_device_interface"]["size"], 216);
    assert_eq!(v["constants"]["VIRTIO_SND_R_PCM_INFO"], 0x100);
    assert_eq!(v["constants"]["B_MULTI_GET_DESCRIPTION"], 8020);
}

#[test]
fn spec_diff_between_files_and_deny_breaking() {
    let fx = "codegen/tests/fixtures";
    let o = xtask(&[
        "spec-diff",
        &format!("{fx}/virtio_snd_1_2.toml"),
        &format!("{fx}/virtio_snd_1_3.toml"),
        "--deny-breaking",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("additive  size 12 -> 16 bytes (grows at the end; read only with VIRTIO_SND_F_CTLS)"),
        "{}",
        text(&o)
    );
    let o = xtask(&[
        "spec-diff",
        &format!("{fx}/moved_old.toml"),
        &format!("{fx}/moved_new.toml"),
        "--deny-breaking",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("breaking  field buffer_bytes moved: offset 4 -> 8"),
        "{}",
        text(&o)
    );
    let o = xtask(&[
        "spec-diff",
        &format!("{fx}/moved_old.toml"),
        &format!("{fx}/moved_new.toml"),
    ]);
    assert!(
        o.status.success(),
        "without --deny-breaking the review only reports:\n{}",
        text(&o)
    );
}

#[test]
fn spec_diff_against_a_revision() {
    // The working tree against HEAD: whatever it says, it must run and end with a summary.
    let o = xtask(&["spec-diff"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("summary: "),
        "{}",
        text(&o)
    );
    let o = xtask(&["spec-diff", "no-such-revision-xyz"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a git revision"), "{}", text(&o));
}

#[test]
fn a_malformed_spec_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[abi]\nname = \"x\"\ntitle = \"x\"\nversion = \"1\"\nsource = \"x\"\ndefault_kind = \"wire\"\nbogus = 1\n").unwrap();
    let o = xtask(&["spec-diff", bad.to_str().unwrap(), bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("bad.toml:7:1") && t.contains("bogus"), "{t}");
}
