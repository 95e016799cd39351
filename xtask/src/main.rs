//! `cargo xtask`: the developer front door (the cargo-xtask pattern).
//!
//! - `gen [--check] [--haiku PATH]`: regenerate everything derived from `spec/*.toml`
//!   (`--check`: only compare, in memory, with the checked-in files);
//!   `gen --import HEADER.h [--allow-removal]` first brings a changed header into its spec
//! - `crosscheck [--haiku PATH]`: the spec against real C (the C compiler on the emitted
//!   headers, bindgen on `linux/virtio_snd.h` and, with `--haiku`, a Haiku tree)
//! - `layout --json`: every structure and constant, by C name
//! - `spec-diff [REV | OLD.toml NEW.toml | --baseline] [--deny-breaking] [--json]`: an ABI
//!   review; `--update-baseline` makes the working tree the released ABI
//! - `test`: everything CI runs, after installing what it needs (`setup`)
//! - `setup [--check]`: install (or only look for) what the tests need from the machine
//! - `fuzz [TARGET] [--time SECONDS]`: the coverage-guided fuzz targets in `fuzz/`
//!   ([`xtask::fuzz`]; built and run through cargo, like the add-on's commands)
//! - `build-haiku`, `bench`, `sim`, `qemu`, `audit`, `package`, `soak`: the add-on's
//!   commands, run by
//!   `xtask-addon` ([`xtask::forward`]): the add-on, audited, and its install tree; what a
//!   BUFFER_EXCHANGE costs it (callgrind); playing through the
//!   built add-on in the Haiku kernel simulator or against QEMU's device; Haiku's kernel
//!   ELF loader rules and frame pointers on any add-on
//!
//! This binary's crate graph holds no crate of the driver, the add-on or the simulator (the
//! tidy invariant `front-door-alone`).
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use xtask::{bindgen_check, cargo, forward, fuzz, gen, import, setup, spec_diff, step, Result};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "virtio_sound developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Regenerate spec/src/generated/, spec/generated/ and docs/generated/ from spec/*.toml
    /// (writing checks the emitted C headers with a C compiler first; bindgen's check
    /// against the real headers is `crosscheck`).
    Gen {
        /// Do not write; fail and show the diff if a checked-in file is stale. Needs neither
        /// a C compiler nor libclang.
        #[arg(long)]
        check: bool,
        /// A Haiku source tree: also cross-check hmulti_audio.h and the driver ABI headers
        /// (bindgen; needs libclang).
        #[arg(long, value_name = "PATH")]
        haiku: Option<PathBuf>,
        /// First update the spec file that records this header's name from the header
        /// (in place, comments kept), print the spec-diff, then regenerate. What the header
        /// cannot say is left as `todo` markers (spec/SCHEMA.md) and nothing is generated.
        #[arg(long, value_name = "HEADER.h", conflicts_with_all = ["check", "haiku"])]
        import: Option<PathBuf>,
        /// With --import: remove what the header no longer declares (default: report, keep).
        #[arg(long, requires = "import")]
        allow_removal: bool,
        /// With --import: arguments for libclang, after `--` (include paths, a target).
        #[arg(last = true, requires = "import")]
        clang_args: Vec<String>,
    },
    /// Cross-check the spec against real C: the emitted headers compiled by a C compiler,
    /// and bindgen's reading of linux/virtio_snd.h (Linux 6.9 or newer: every struct and
    /// constant of spec/virtio_snd.toml) and, with --haiku, a Haiku tree's headers.
    Crosscheck {
        /// A Haiku source tree: also hmulti_audio.h and the driver ABI headers.
        #[arg(long, value_name = "PATH")]
        haiku: Option<PathBuf>,
    },
    /// Print the layout of every structure and the value of every constant.
    Layout {
        /// JSON (the only format).
        #[arg(long)]
        json: bool,
    },
    /// Review the ABI change between two versions of the spec: each change is breaking,
    /// rename (binary-compatible, source-breaking) or additive.
    SpecDiff(spec_diff::SpecDiffArgs),
    /// Run everything CI runs: gen --check, crosscheck, fmt, clippy, the tests (first
    /// installing what they need when it can, as `setup` does).
    Test,
    /// Install what the tests need from the machine (libclang, the Linux UAPI headers, a C
    /// compiler, QEMU with virtio-sound-pci) with apt-get, through sudo when not root.
    Setup {
        /// Only report what is installed and what is missing; fail if the tests need more.
        #[arg(long)]
        check: bool,
    },
    #[command(about = forward::BUILD_HAIKU, disable_help_flag = true)]
    BuildHaiku(Forwarded),
    #[command(about = forward::BENCH, disable_help_flag = true)]
    Bench(Forwarded),
    /// Run the coverage-guided fuzz targets (libFuzzer; fuzz/): executions, executions per
    /// second and coverage per target. Crashes go to fuzz/artifacts/TARGET/.
    Fuzz {
        /// One target (spec_decoders, codegen_toml, ioctl, hostile_device); default: all.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60, value_name = "SECONDS")]
        time: u64,
        /// Minimise this crashing input of TARGET (written next to it as FILE.min).
        #[arg(long, value_name = "FILE", requires = "target")]
        minimize: Option<PathBuf>,
    },
    #[command(about = forward::SIM, disable_help_flag = true)]
    Sim(Forwarded),
    #[command(about = forward::QEMU, disable_help_flag = true)]
    Qemu(Forwarded),
    #[command(about = forward::AUDIT, disable_help_flag = true)]
    Audit(Forwarded),
    #[command(about = forward::PACKAGE_CMD, disable_help_flag = true)]
    Package(Forwarded),
    #[command(about = forward::SOAK, disable_help_flag = true)]
    Soak(Forwarded),
}

/// The arguments of a command `xtask-addon` runs, passed on as they are (its own parser
/// checks them and prints its `--help`).
#[derive(Args)]
struct Forwarded {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    // `cargo xtask help sim` shows xtask-addon's help of `sim`, as `cargo xtask sim --help`.
    if let [help, name] = &argv[..] {
        if help == "help" && name.to_str().is_some_and(forward::is_forwarded) {
            return forward::run(&argv);
        }
    }
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Gen {
            import: Some(header),
            allow_removal,
            clang_args,
            ..
        } => import::run(
            &header,
            &import::Options {
                allow_removal,
                clang_args,
            },
        ),
        Cmd::Gen { check, haiku, .. } => gen::run(check, haiku.as_deref()),
        Cmd::Crosscheck { haiku } => bindgen_check::run(haiku.as_deref()),
        Cmd::Layout { json: _ } => gen::layout(),
        Cmd::SpecDiff(args) => spec_diff::run(&args),
        Cmd::Test => run_tests(),
        Cmd::Setup { check } => setup::run(check),
        Cmd::Fuzz {
            target: Some(target),
            time,
            minimize: Some(file),
        } => fuzz::minimize(&target, &file, time),
        Cmd::Fuzz { target, time, .. } => fuzz::run(target.as_deref(), time),
        Cmd::BuildHaiku(_)
        | Cmd::Bench(_)
        | Cmd::Sim(_)
        | Cmd::Qemu(_)
        | Cmd::Audit(_)
        | Cmd::Package(_)
        | Cmd::Soak(_) => {
            // The command's name and its arguments, exactly as given.
            return forward::run(&argv);
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

/// How long `cargo xtask test` runs each fuzz target (its seeds, then new inputs).
const FUZZ_SMOKE_SECONDS: u64 = 5;

fn run_tests() -> Result {
    setup::before_tests()?;
    eprintln!("==> cargo xtask gen --check");
    gen::run(true, None)?;
    eprintln!("==> cargo xtask crosscheck");
    bindgen_check::run(None)?;
    eprintln!("==> cargo xtask spec-diff --baseline --deny-breaking");
    spec_diff::gate()?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    step(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "cargo xtask build-haiku",
        &mut forward::command(["build-haiku"]),
    )?;
    step(
        "cargo test",
        cargo().args(["test", "--workspace", "--quiet"]),
    )?;
    eprintln!("==> cargo xtask fuzz, {FUZZ_SMOKE_SECONDS} s per target from its seeds");
    fuzz::smoke(FUZZ_SMOKE_SECONDS)?;
    eprintln!("==> all checks passed");
    Ok(())
}
