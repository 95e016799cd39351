//! The commands of `cargo xtask` that link the driver, the add-on or the simulator. Their
//! code lives in the `xtask-addon` crate; the front door lists them in its `--help` and runs
//! them as `cargo run --quiet --package xtask-addon -- ARGS`, so they are built only when
//! one of them runs, and a driver that does not compile leaves `gen`, `layout`, `spec-diff`,
//! `crosscheck` and `setup` working.
//!
//! Their one-line descriptions are written once, here: both crates' `--help` take them.

use std::ffi::OsString;
use std::process::ExitCode;

/// The package whose binary runs these commands.
pub const PACKAGE: &str = "xtask-addon";

pub const BUILD_HAIKU: &str = "Build the Haiku add-on: target/haiku/virtio_sound (audited), \
    target/haiku/install/ and the package target/haiku/virtio_sound-VERSION-1-x86_64.hpkg";
pub const BENCH: &str = "What one BUFFER_EXCHANGE costs the built add-on (or each --addon): \
    its own instructions, its kernel and queue calls, and the simulator's cost (needs valgrind)";
pub const SIM: &str =
    "Play a WAV file (or a sine) through the built add-on in the Haiku kernel simulator";
pub const QEMU: &str = "Play a WAV file (or a sine) through the built add-on against QEMU's \
    virtio-sound-pci device, in a small Linux guest; writes what QEMU's wav backend received";
pub const AUDIT: &str = "Check a built add-on against every rule of Haiku's kernel ELF loader, \
    and that Haiku's kernel debugger can walk its stack (frame pointers)";

pub const SOAK: &str = "Hours of simulated duplex audio through the built add-on with a \
    format change every minute and FORCE_STOP every ten: heap, areas and semaphores flat, frame \
    counts exact, timing error unchanged";

pub const PACKAGE_CMD: &str = "Write the Haiku package of the built add-on, \
    target/haiku/virtio_sound-VERSION-1-x86_64.hpkg; --list FILE.hpkg prints one";

/// The forwarded commands, as typed after `cargo xtask`, with their descriptions.
pub const COMMANDS: [(&str, &str); 7] = [
    ("build-haiku", BUILD_HAIKU),
    ("bench", BENCH),
    ("sim", SIM),
    ("qemu", QEMU),
    ("audit", AUDIT),
    ("package", PACKAGE_CMD),
    ("soak", SOAK),
];

/// Whether `name` is one of [`COMMANDS`].
pub fn is_forwarded(name: &str) -> bool {
    COMMANDS.iter().any(|(n, _)| *n == name)
}

/// The cargo command that runs `xtask-addon ARGS`.
pub fn command<I, S>(args: I) -> std::process::Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = crate::cargo();
    c.args(["run", "--quiet", "--package", PACKAGE, "--"])
        .args(args);
    c
}

/// Runs `xtask-addon ARGS` (cargo builds it first if needed, showing any compile error) and
/// exits as it did.
pub fn run(args: &[OsString]) -> ExitCode {
    match command(args).status() {
        Ok(status) => match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("error: {PACKAGE} was killed ({status})");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: cannot run cargo for {PACKAGE}: {e}");
            ExitCode::FAILURE
        }
    }
}
