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
        text(&o).contains(
            "additive  size 12 -> 16 bytes (grows at the end; read only with VIRTIO_SND_F_CTLS)"
        ),
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

#[test]
fn spec_diff_json_is_an_array_of_changes() {
    let fx = "codegen/tests/fixtures";
    let new = format!("{fx}/ioctl_new.toml");
    let o = xtask(&["spec-diff", "--json", &format!("{fx}/ioctl_old.toml"), &new]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is only JSON");
    let changes = v.as_array().expect("an array");
    assert_eq!(changes.len(), 6, "{v:#}");
    for c in changes {
        let keys: Vec<&str> = c.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys.len(), 4, "{c}");
        for k in ["file", "section", "class", "text"] {
            assert!(c[k].is_string(), "{k} in {c}");
        }
    }
    assert_eq!(
        changes[5],
        serde_json::json!({
            "file": new,
            "section": "ioctl B_MULTI_GET_MIX",
            "class": "additive",
            "text": "direction inout -> out (the driver reads less of the argument)",
        })
    );
    let o = xtask(&[
        "spec-diff",
        "--json",
        &format!("{fx}/renames_old.toml"),
        &format!("{fx}/renames_new.toml"),
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v.as_array().unwrap().iter().all(|c| c["class"] == "rename"),
        "{v:#}"
    );
}

#[test]
fn spec_diff_deny_breaking_gates_on_the_baseline() {
    // Today's tree is the released ABI, or differs from it only in compatible ways.
    let o = xtask(&["spec-diff", "--baseline", "--deny-breaking"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .starts_with("summary: 0 breaking, "),
        "{}",
        text(&o)
    );
    // A breaking pair fails, and the failure lists what broke.
    let fx = "codegen/tests/fixtures";
    let o = xtask(&[
        "spec-diff",
        "--json",
        "--deny-breaking",
        &format!("{fx}/growth_old.toml"),
        &format!("{fx}/growth_new.toml"),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error: 8 breaking ABI change(s):\n"), "{err}");
    assert!(
        err.contains("growth_new.toml: struct virtio_snd_pcm_hdr: size 8 -> 12 bytes: grows at the end, but a wire message part"),
        "{err}"
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&o.stdout).is_ok());
    // --baseline compares with the checked-in baseline only.
    let o = xtask(&["spec-diff", "--baseline", "HEAD"]);
    assert!(!o.status.success());
}

/// `cargo xtask --help` lists every command, those `xtask-addon` runs included.
#[test]
fn help_lists_every_command() {
    let o = xtask(&["--help"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let listed: Vec<&str> = out
        .split("Commands:\n")
        .nth(1)
        .expect("a command list")
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        listed,
        [
            "gen",
            "crosscheck",
            "layout",
            "spec-diff",
            "test",
            "setup",
            "build-haiku",
            "bench",
            "fuzz",
            "sim",
            "qemu",
            "audit",
            "package",
            "soak",
            "help"
        ],
        "{out}"
    );
}

/// The add-on's commands are passed on to `xtask-addon` as they are: its help, its option
/// errors (clap's status 2), its failures (status 1) and its output come back unchanged.
#[test]
fn the_addons_commands_are_passed_on() {
    for args in [&["sim", "--help"][..], &["help", "sim"]] {
        let o = xtask(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("Usage: xtask sim [OPTIONS]"), "{out}");
        assert!(out.contains("--device-config"), "{out}");
        assert!(out.contains("--latency"), "{out}");
    }
    // --out is needed unless the run is a --latency sweep: clap's refusal, status 2.
    let o = xtask(&["sim", "--channels", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--out <OUT>"), "{}", text(&o));
    let o = xtask(&["sim", "--channels", "99", "--out", "x.wav"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("invalid value '99' for '--channels <CHANNELS>': 99 is not in 1..=16"),
        "{}",
        text(&o)
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.so");
    let o = xtask(&["audit", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("[elf] cannot read"),
        "{}",
        text(&o)
    );
}

/// `gen --check` is the freshness check alone: it runs without libclang and without a C
/// compiler. The cross-check is what needs them (with `LIBCLANG_PATH` naming an empty
/// directory, libclang's search looks nowhere else).
#[test]
fn gen_check_needs_neither_libclang_nor_a_c_compiler() {
    let empty = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: &[(&str, &std::ffi::OsStr)]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"));
        c.args(args)
            .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
        c.envs(env.iter().copied());
        c.output().unwrap()
    };
    let no_clang = ("LIBCLANG_PATH", empty.path().as_os_str());
    let no_cc = ("CC", std::ffi::OsStr::new("/nonexistent/cc"));
    let o = run(&["gen", "--check"], &[no_clang, no_cc]);
    assert!(o.status.success(), "{}", text(&o));
    // The same environment stops the cross-check: at the C compiler, then at libclang.
    let o = run(&["crosscheck"], &[no_clang, no_cc]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("cannot run the C compiler `/nonexistent/cc`"),
        "{}",
        text(&o)
    );
    let o = run(&["crosscheck"], &[no_clang]);
    assert!(!o.status.success());
    assert!(text(&o).contains("libclang"), "{}", text(&o));
}
