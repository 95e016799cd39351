//! `xtask-addon`: the commands of `cargo xtask` that link the driver, the add-on or the
//! simulator. The front door (`xtask`) lists them in its `--help` and runs this binary for
//! them (`xtask::forward`), so the front door itself builds without any of those crates.
//!
//! - `build-haiku`: the add-on, audited, and its install tree
//! - `audit FILE`: would Haiku's kernel ELF loader accept this add-on, and can its kernel
//!   debugger walk the add-on's stack?
//! - `bench`: what a BUFFER_EXCHANGE costs the built add-on (or any), under callgrind
//! - `sim`: play through the built add-on in the Haiku kernel simulator
//! - `qemu`: the same against QEMU's virtio-sound-pci device, in a Linux guest
//! - `package`: the Haiku package of the add-on (`build-haiku` writes it too), or
//!   `--list FILE.hpkg`
//! - `soak`: hours of simulated duplex audio with format changes and stops, checked
#![forbid(unsafe_code)]

mod audit;
mod bench;
mod haiku;
mod latency;
mod memcheck;
mod package;
mod qemu;
mod qemucmd;
mod simcmd;
mod soak;
mod vhostcmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::forward;
// What the modules reach through `crate::`: the front door's spec loading, the workspace
// root and cargo.
use xtask::{cargo, gen, root, Result};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "xtask",
    about = "virtio_sound developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    #[command(about = forward::BUILD_HAIKU)]
    BuildHaiku {
        /// For tests: build with arithmetic overflow checks, into
        /// target/haiku/overflow-checks/ (the add-on a user installs is left alone).
        #[arg(long, hide = true)]
        overflow_checks: bool,
    },
    #[command(about = forward::BENCH)]
    Bench(bench::BenchArgs),
    #[command(about = forward::SIM)]
    Sim(simcmd::SimArgs),
    #[command(about = forward::QEMU)]
    Qemu(qemucmd::QemuArgs),
    #[command(about = forward::PACKAGE_CMD)]
    Package(package::PackageArgs),
    #[command(about = forward::SOAK)]
    Soak(soak::SoakArgs),
    #[command(about = forward::AUDIT)]
    Audit {
        /// The add-on (an ELF shared object).
        file: PathBuf,
    },
    /// For the memcheck test (run under valgrind): runs with format changes, FORCE_STOP and
    /// restart through the built add-on in the simulator.
    #[command(hide = true)]
    MemcheckSession(memcheck::MemcheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Sim(args) => simcmd::run(&args),
        Cmd::Qemu(args) => qemucmd::run(&args),
        Cmd::Soak(args) => soak::run(&args),
        Cmd::Audit { file } => audit::run(&file),
        Cmd::Package(args) => package::run(&args),
        Cmd::MemcheckSession(args) => memcheck::run(&args),
        Cmd::BuildHaiku { overflow_checks } => {
            haiku::build_variant(haiku::Variant { overflow_checks }).map(|_| ())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
