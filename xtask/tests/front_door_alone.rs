//! The tidy invariant `front-door-alone`, for real: in a copy of the workspace where every
//! crate but the front door (`xtask`) and `codegen` fails to compile, as after a spec edit
//! that breaks the driver, `cargo xtask gen --check`, `layout` and `spec-diff` still build
//! and run, and `cargo xtask gen` regenerates the spec crate.
//!
//! The copy builds into a target directory of its own under cargo's test scratch directory
//! (kept between runs, so only the first run compiles the front door's dependencies): the
//! workspace's own `target/debug/xtask` is what the other tests run, and the copy's binary
//! must not replace it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// What every broken crate's error says.
const BROKEN: &str = "broken on purpose by xtask/tests/front_door_alone.rs";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The repository's files (tracked, and untracked but not ignored), copied under `to`.
fn copy_workspace(to: &Path) {
    let out = Command::new("git")
        .current_dir(root())
        .args(["ls-files", "-co", "--exclude-standard", "-z"])
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "{}", text(&out));
    for rel in out.stdout.split(|&b| b == 0).filter(|r| !r.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).unwrap());
        let from = root().join(rel);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let dest = to.join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&from, &dest).unwrap();
    }
}

/// Every library, binary and proc-macro root of every member but `keep`, relative to the
/// workspace root.
fn crate_roots_except(keep: &[&str]) -> Vec<PathBuf> {
    let out = Command::new(env!("CARGO"))
        .current_dir(root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ws = PathBuf::from(meta["workspace_root"].as_str().unwrap());
    let mut roots = Vec::new();
    for p in meta["packages"].as_array().unwrap() {
        if keep.contains(&p["name"].as_str().unwrap()) {
            continue;
        }
        for t in p["targets"].as_array().unwrap() {
            let kinds: Vec<&str> = t["kind"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|k| k.as_str())
                .collect();
            if kinds
                .iter()
                .any(|k| ["lib", "rlib", "cdylib", "bin", "proc-macro"].contains(k))
            {
                let src = Path::new(t["src_path"].as_str().unwrap());
                roots.push(src.strip_prefix(&ws).unwrap().to_path_buf());
            }
        }
    }
    roots.sort();
    roots.dedup();
    roots
}

/// `cargo ARGS` in the copy, with its own target directory and no network.
fn cargo_in(ws: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO"))
        .current_dir(ws)
        .args(args)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("front-door-alone"),
        )
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .expect("run cargo")
}

#[test]
fn gen_builds_and_runs_when_no_other_crate_compiles() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    copy_workspace(ws);
    let broken = crate_roots_except(&["xtask", "codegen"]);
    for c in ["spec/src/lib.rs", "driver/src/lib.rs", "addon/src/lib.rs"] {
        assert!(broken.contains(&PathBuf::from(c)), "{c} in {broken:?}");
    }
    for rel in &broken {
        let path = ws.join(rel);
        let mut src = std::fs::read_to_string(&path).unwrap();
        src.push_str(&format!("\ncompile_error!(\"{BROKEN}\");\n"));
        std::fs::write(&path, src).unwrap();
    }

    // The premise: the driver does not build in the copy.
    let o = cargo_in(ws, &["build", "--quiet", "--package", "driver"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(BROKEN), "{}", text(&o));

    // The front door's commands that need no add-on all build and run.
    let o = cargo_in(ws, &["xtask", "gen", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = cargo_in(ws, &["xtask", "layout", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["structs"]["virtio_snd_pcm_info"]["size"], 32);
    let o = cargo_in(ws, &["xtask", "spec-diff", "--baseline", "--deny-breaking"]);
    assert!(o.status.success(), "{}", text(&o));

    // A spec edit: --check names the stale generated file, gen writes it, --check passes.
    let toml = ws.join("spec/virtio_snd.toml");
    let before = std::fs::read_to_string(&toml).unwrap();
    let field = "{ name = \"buffer_bytes\", type = \"le32\"";
    assert!(before.contains(field));
    std::fs::write(
        &toml,
        before.replacen(field, "{ name = \"buffer_size\", type = \"le32\"", 1),
    )
    .unwrap();
    let o = cargo_in(ws, &["xtask", "gen", "--check"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("generated files are stale: ")
            && text(&o).contains("spec/src/generated/virtio_snd.rs"),
        "{}",
        text(&o)
    );
    let o = cargo_in(ws, &["xtask", "gen"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        std::fs::read_to_string(ws.join("spec/src/generated/virtio_snd.rs"))
            .unwrap()
            .contains("buffer_size"),
        "gen did not write the renamed field"
    );
    let o = cargo_in(ws, &["xtask", "gen", "--check"]);
    assert!(o.status.success(), "{}", text(&o));
}
