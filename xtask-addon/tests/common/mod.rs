//! Running the built `xtask-addon` binary from the workspace root: what `cargo xtask sim`,
//! `qemu`, `audit` and `build-haiku` run (the front door passes the arguments on as they are).

#![allow(dead_code)] // each test file uses its part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

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

/// QEMU boots of one test binary run one at a time (cargo runs test binaries one after
/// another): the guest plays in real time and must not compete for the CPU.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Holds the boot slot of this test binary.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// QEMU must be there: `VIRTIO_SOUND_REQUIRE_QEMU` is set, or `CI=true` (as in
/// xtask's `setup.rs`).
pub fn qemu_required() -> bool {
    std::env::var_os("VIRTIO_SOUND_REQUIRE_QEMU").is_some()
        || std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The command [`xtask`] runs, to be given more environment.
pub fn xtask_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask-addon"));
    c.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

/// This process's `PATH` with `bin` first.
pub fn path_with(bin: &Path) -> std::ffi::OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap()
}

/// Runs `cargo xtask qemu ARGS --report R` and returns the report, or `None` when QEMU is
/// not there (and not required).
pub fn qemu(args: &[&str]) -> Option<Vec<Value>> {
    qemu_with_path(args, None)
}

/// [`qemu`] with `bin` put first on `PATH`.
pub fn qemu_with_path(args: &[&str], bin: Option<&Path>) -> Option<Vec<Value>> {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let mut all: Vec<&str> = vec!["qemu"];
    all.extend_from_slice(args);
    all.extend(["--report", report.to_str().unwrap()]);
    let o = match bin {
        None => xtask(&all),
        Some(bin) => xtask_command(&all)
            .env("PATH", path_with(bin))
            .output()
            .unwrap(),
    };
    let out = text(&o);
    if !o.status.success() {
        if out.contains("or newer with virtio-sound-pci is needed")
            || out.contains("Install it with `cargo install vhost-device-sound")
        {
            assert!(
                !qemu_required(),
                "QEMU is required here (VIRTIO_SOUND_REQUIRE_QEMU or CI=true) but:\n{out}"
            );
            eprintln!("skipping: {out}");
            return None;
        }
        panic!("cargo xtask qemu {args:?} failed:\n{out}");
    }
    eprintln!("{out}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    Some(r.as_array().expect("a list of runs").clone())
}

pub fn num(v: &Value, k: &str) -> f64 {
    v.get(k)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number {k} in {v}"))
}

/// The add-on, built once per test binary with the README's command.
pub fn built_addon() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let out = xtask(&["build-haiku"]);
        assert!(
            out.status.success(),
            "build-haiku: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        root.join("target/haiku/virtio_sound")
    })
}
