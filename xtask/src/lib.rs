//! The front door's library: what `cargo xtask gen`, `crosscheck`, `layout`, `spec-diff`,
//! `setup` and `test` are made of, and what `xtask-addon` shares with them (the spec files
//! and their generated outputs, the workspace root, a cargo command).
//!
//! Its crate graph holds `codegen` and general libraries only, never the ABI crate, the
//! driver, the add-on or the simulator (the tidy invariant `front-door-alone`): a spec edit
//! that breaks the driver cannot break the tool that regenerates the driver's ABI.
#![forbid(unsafe_code)]

pub mod bindgen_check;
pub mod forward;
pub mod fuzz;
pub mod gen;
pub mod import;
pub mod setup;
pub mod spec_diff;

use std::path::{Path, PathBuf};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

pub type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// The cargo that runs this process (or `cargo`), in the workspace root.
pub fn cargo() -> std::process::Command {
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs one step of `cargo xtask test`, announcing it as `==> NAME`.
pub fn step(name: &str, cmd: &mut std::process::Command) -> Result {
    eprintln!("==> {name}");
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: cannot run: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{name} failed ({status})").into())
    }
}
