//! `cargo xtask`: the developer front door (the cargo-xtask pattern).
//!
//! - `gen [--check] [--haiku PATH]`: regenerate everything derived from `spec/*.toml`;
//!   `gen --import HEADER.h [--allow-removal]` first brings a changed header into its spec
//! - `layout --json`: every structure and constant, by C name
//! - `spec-diff [REV | OLD.toml NEW.toml | --baseline] [--deny-breaking] [--json]`: an ABI
//!   review; `--update-baseline` makes the working tree the released ABI
//! - `test`: everything CI runs, after installing what it needs (`setup`)
//! - `setup [--check]`: install (or only look for) what the tests need from the machine
//! - `bench`: the exchange benchmark (callgrind)
//! - `sim`: play through the built add-on in the Haiku kernel simulator
//! - `qemu`: the same against QEMU's virtio-sound-pci device, in a Linux guest
//! - `build-haiku`: the add-on, audited, and its install tree
//! - `audit FILE`: would Haiku's kernel ELF loader accept this add-on, and can its kernel
//!   debugger walk the add-on's stack?
#![forbid(unsafe_code)]

mod audit;
mod bench;
mod bindgen_check;
mod gen;
mod haiku;
mod import;
mod qemu;
mod qemucmd;
mod setup;
mod simcmd;
mod spec_diff;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "virtio_sound developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Regenerate spec/src/generated/ and spec/generated/ from spec/*.toml, after checking
    /// the layouts with a C compiler and bindgen against the real headers.
    Gen {
        /// Do not write; fail and show the diff if a checked-in file is stale.
        #[arg(long)]
        check: bool,
        /// A Haiku source tree: also cross-check hmulti_audio.h and the driver ABI headers.
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
    /// Print the layout of every structure and the value of every constant.
    Layout {
        /// JSON (the only format).
        #[arg(long)]
        json: bool,
    },
    /// Review the ABI change between two versions of the spec: each change is breaking,
    /// rename (binary-compatible, source-breaking) or additive.
    SpecDiff(spec_diff::SpecDiffArgs),
    /// Run everything CI runs: gen --check, fmt, clippy, the tests (first installing what
    /// they need when it can, as `setup` does).
    Test,
    /// Install what the tests need from the machine (libclang, the Linux UAPI headers, a C
    /// compiler, QEMU with virtio-sound-pci) with apt-get, through sudo when not root.
    Setup {
        /// Only report what is installed and what is missing; fail if the tests need more.
        #[arg(long)]
        check: bool,
    },
    /// Build the Haiku add-on: target/haiku/virtio_sound (audited) and target/haiku/install/.
    BuildHaiku {
        /// For tests: build with arithmetic overflow checks, into
        /// target/haiku/overflow-checks/ (the add-on a user installs is left alone).
        #[arg(long, hide = true)]
        overflow_checks: bool,
    },
    /// The exchange benchmark: timing error and instructions per BUFFER_EXCHANGE.
    Bench,
    /// Play a WAV file (or a sine) through the built add-on in the Haiku kernel simulator.
    Sim(simcmd::SimArgs),
    /// Play a WAV file (or a sine) through the built add-on against QEMU's virtio-sound-pci
    /// device, in a small Linux guest; writes what QEMU's wav backend received.
    Qemu(qemucmd::QemuArgs),
    /// Check a built add-on against every rule of Haiku's kernel ELF loader, and that Haiku's
    /// kernel debugger can walk its stack (frame pointers).
    Audit {
        /// The add-on (an ELF shared object).
        file: PathBuf,
    },
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn main() -> ExitCode {
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
        Cmd::Layout { json: _ } => gen::layout(),
        Cmd::SpecDiff(args) => spec_diff::run(&args),
        Cmd::Test => run_tests(),
        Cmd::Setup { check } => setup::run(check),
        Cmd::Bench => bench::run(),
        Cmd::Sim(args) => simcmd::run(&args),
        Cmd::Qemu(args) => qemucmd::run(&args),
        Cmd::Audit { file } => audit::run(&file),
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

pub type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn cargo() -> std::process::Command {
    let mut c =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn step(name: &str, cmd: &mut std::process::Command) -> Result {
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

fn run_tests() -> Result {
    setup::before_tests()?;
    gen::run(true, None)?;
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
    eprintln!("==> cargo xtask build-haiku");
    haiku::build()?;
    step(
        "cargo test",
        cargo().args(["test", "--workspace", "--quiet"]),
    )?;
    eprintln!("==> all checks passed");
    Ok(())
}
