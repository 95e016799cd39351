//! Shared by the tests: where the `hpkg` crate's sources are, and a sample package.
#![allow(dead_code)]

use std::path::PathBuf;

/// The `hpkg` dev-dependency's source directory, found through `cargo metadata` (nothing
/// of it is copied into this repository).
pub fn hpkg_crate_dir() -> PathBuf {
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pkg = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hpkg" && p["version"] == "1.0.0")
        .expect("hpkg 1.0.0 in cargo metadata");
    PathBuf::from(pkg["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The package built by Haiku's own `package create` that the hpkg crate ships.
pub fn haiku_built_package() -> PathBuf {
    hpkg_crate_dir().join("sample/ctags_source-5.8-5-source.hpkg")
}

pub mod sample;
