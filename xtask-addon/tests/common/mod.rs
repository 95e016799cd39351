//! Running the built `xtask-addon` binary from the workspace root: what `cargo xtask sim`,
//! `qemu`, `audit` and `build-haiku` run (the front door passes the arguments on as they are).

use std::path::Path;
use std::process::{Command, Output};

pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask-addon"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run xtask-addon")
}

/// Standard output and standard error together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
