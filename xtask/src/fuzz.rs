//! `cargo xtask fuzz [TARGET] [--time SECONDS]`: the coverage-guided fuzz targets in `fuzz/`.
//!
//! The engine is libFuzzer through the `libfuzzer-sys` crate, built the way `cargo fuzz`
//! builds it with `--sanitizer none` (the instrumentation flags below; stable Rust): the
//! targets are plain `cargo fuzz` targets, and a developer with cargo-fuzz installed can run
//! them with it. This command builds them itself so that neither CI nor `cargo xtask test`
//! needs cargo-fuzz, and it reads libFuzzer's own statistics to print executions,
//! executions per second and coverage per target. Without a sanitizer, out-of-bounds
//! accesses are caught by what the targets run on: safe Rust's bounds checks (the driver has
//! no `unsafe` of its own but its DMA contracts) and the simulated kernel, which checks every
//! access against its areas. Overflow checks and debug assertions are on.
//!
//! `fuzz/` is its own workspace (excluded from the main one), so the instrumented build has
//! its own `fuzz/target/`. Seeds are `fuzz/seeds/TARGET/` (in the repository); what a run
//! finds goes to `fuzz/corpus/TARGET/` and crashes to `fuzz/artifacts/TARGET/` (both
//! ignored by git). A crash is minimised with `--minimize FILE` and becomes a regression
//! test in the crate it belongs to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{root, Result};

/// The fuzz targets, as `fuzz/Cargo.toml` names them, with what each one exercises.
pub const TARGETS: [(&str, &str); 4] = [
    (
        "spec_decoders",
        "every wire decoder of the spec crate (control requests and answers, events, ioctls)",
    ),
    (
        "codegen_toml",
        "codegen's TOML front end: no panic, every error names file:line",
    ),
    (
        "ioctl",
        "ioctl sequences with nested pointers, then a bit-exact session",
    ),
    (
        "hostile_device",
        "a device whose every answer, length, id and event the fuzzer picks",
    ),
];

/// The largest input libFuzzer makes, per target (the TOML front end needs whole specs).
fn max_len(target: &str) -> u32 {
    match target {
        "codegen_toml" => 16384,
        _ => 4096,
    }
}

/// The flags `cargo fuzz build --sanitizer none` gives rustc: SanitizerCoverage's module
/// pass with inline 8-bit counters, the PC table and comparison tracing (what libFuzzer's
/// coverage feedback reads), `cfg(fuzzing)`, debug assertions and overflow checks.
pub const RUSTFLAGS: &str = "-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing \
    -Cdebug-assertions \
    -Coverflow-checks";

/// The host's target triple (`rustc -vV`): given to cargo explicitly, as cargo fuzz does,
/// so that RUSTFLAGS instrument the targets and not build scripts or proc macros.
fn host_triple() -> Result<String> {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_string)
        .ok_or_else(|| "rustc -vV names no host".into())
}

pub fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Cargo in the fuzz workspace, with none of the caller's flags or target directory: the
/// fuzz workspace builds into its own `fuzz/target/`, with the flags each use sets.
fn fuzz_cargo() -> Command {
    let mut c = crate::cargo();
    c.current_dir(fuzz_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    c
}

/// Builds every target; returns the directory holding the binaries.
pub fn build() -> Result<PathBuf> {
    let triple = host_triple()?;
    let dir = fuzz_dir();
    eprintln!("==> building the fuzz targets (libFuzzer, SanitizerCoverage)");
    let status = fuzz_cargo()
        .env("RUSTFLAGS", RUSTFLAGS)
        .args(["build", "--release", "--quiet", "--bins", "--locked"])
        .args(["--target", &triple])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the fuzz targets failed ({status})").into());
    }
    Ok(dir.join("target").join(triple).join("release"))
}

/// What libFuzzer reported for one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    pub runs: u64,
    pub exec_per_sec: u64,
    /// Coverage: the PCs (edges) reached, libFuzzer's `cov:`.
    pub cov: u64,
    /// Features (edges, counters and comparisons), libFuzzer's `ft:`.
    pub ft: u64,
    /// Inputs in the corpus at the end.
    pub corpus: u64,
    pub seconds: u64,
}

/// The number after `key` in `line` (`cov: 123`, `exec/s: 45`).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Reads libFuzzer's output: its last status line (`#N ... cov: C ft: F corp: K/...`) and
/// the final statistics `-print_final_stats=1` prints.
pub fn parse_stats(output: &str) -> Option<Stats> {
    let status = output
        .lines()
        .rfind(|l| l.starts_with('#') && l.contains("cov:"))?;
    let stat = |key: &str| {
        output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(Stats {
        runs: stat("number_of_executed_units").or_else(|| number_after(status, "#"))?,
        exec_per_sec: stat("average_exec_per_sec")
            .or_else(|| number_after(status, "exec/s:"))
            .unwrap_or(0),
        cov: number_after(status, "cov:")?,
        ft: number_after(status, "ft:").unwrap_or(0),
        corpus: number_after(status, "corp:").unwrap_or(0),
        seconds: output
            .lines()
            .find_map(|l| number_after(l.strip_prefix("Done ")?, "runs in"))
            .unwrap_or(0),
    })
}

/// Runs `target` for `seconds` from its seeds (and, with `corpus`, the corpus it grows).
fn run_one(bins: &Path, target: &str, seconds: u64, corpus: &Path) -> Result<Stats> {
    let dir = fuzz_dir();
    let seeds = dir.join("seeds").join(target);
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let out = Command::new(bins.join(target))
        .arg(corpus)
        .arg(&seeds)
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", max_len(target)))
        .arg("-timeout=20")
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run the {target} fuzz target: {e}"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "fuzz target {target} failed ({}); the input is in {}/ \
             (minimise it with `cargo xtask fuzz {target} --minimize FILE`):\n{}",
            out.status,
            artifacts.display(),
            tail.join("\n")
        )
        .into());
    }
    parse_stats(&text).ok_or_else(|| {
        format!("no statistics in the {target} fuzz target's output:\n{text}").into()
    })
}

fn print(target: &str, s: &Stats) {
    println!(
        "{target:16} {:>10} executions in {:>4} s  {:>7} exec/s  cov {:>6}  ft {:>6}  corpus {:>5}",
        s.runs, s.seconds, s.exec_per_sec, s.cov, s.ft, s.corpus
    );
}

fn check_target(target: &str) -> Result {
    if TARGETS.iter().any(|(t, _)| *t == target) {
        Ok(())
    } else {
        let names: Vec<&str> = TARGETS.iter().map(|(t, _)| *t).collect();
        Err(format!(
            "no fuzz target {target:?}; the targets: {}",
            names.join(", ")
        )
        .into())
    }
}

/// `cargo xtask fuzz [TARGET] [--time SECONDS]`: each target (or `target`) for `seconds`,
/// growing `fuzz/corpus/TARGET/`.
pub fn run(target: Option<&str>, seconds: u64) -> Result {
    if let Some(t) = target {
        check_target(t)?;
    }
    let bins = build()?;
    for (t, _) in TARGETS
        .iter()
        .filter(|(t, _)| target.is_none_or(|x| x == *t))
    {
        let corpus = fuzz_dir().join("corpus").join(t);
        let s = run_one(&bins, t, seconds, &corpus)?;
        print(t, &s);
    }
    Ok(())
}

/// `cargo xtask test`'s step: the fuzz library's tests, then every target from its seeds for
/// `seconds`, into a scratch corpus (the tree is not written).
pub fn smoke(seconds: u64) -> Result {
    unit_tests()?;
    let bins = build()?;
    let scratch = tempfile::tempdir()?;
    for (t, _) in TARGETS {
        let s = run_one(&bins, t, seconds, &scratch.path().join(t))?;
        print(t, &s);
    }
    Ok(())
}

/// The fuzz crate's own tests (what the targets check with, e.g. that the memory witness
/// catches a stray write), built without the fuzzing flags.
fn unit_tests() -> Result {
    eprintln!("==> the fuzz targets' support library's tests");
    let status = fuzz_cargo()
        .args(["test", "--quiet", "--lib", "--locked"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("the fuzz library's tests failed ({status})").into());
    }
    Ok(())
}

/// `cargo xtask fuzz TARGET --minimize FILE`: libFuzzer's crash minimiser on `file`; the
/// smallest input that still fails is written next to it as `FILE.min`.
pub fn minimize(target: &str, file: &Path, seconds: u64) -> Result {
    check_target(target)?;
    let bins = build()?;
    let out = file.with_extension("min");
    let status = Command::new(bins.join(target))
        .arg("-minimize_crash=1")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-exact_artifact_path={}", out.display()))
        .arg(file)
        .status()?;
    if !status.success() || !out.is_file() {
        return Err(format!("minimising {} failed ({status})", file.display()).into());
    }
    println!("minimised input: {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libFuzzer's closing lines as it prints them (LLVM's FuzzerLoop.cpp `PrintStats` and
    /// `PrintFinalStats`).
    const OUTPUT: &str = "\
INFO: Running with entropic power schedule (0xFF, 100).
#2\tINITED cov: 1197 ft: 1198 corp: 1/1b exec/s: 0 rss: 39Mb
#8192\tpulse  cov: 1301 ft: 2044 corp: 40/900b lim: 80 exec/s: 4096 rss: 41Mb
#20339\tDONE   cov: 1312 ft: 2101 corp: 44/1012b lim: 200 exec/s: 2033 rss: 42Mb
Done 20339 runs in 10 second(s)
stat::number_of_executed_units: 20339
stat::average_exec_per_sec:     2033
stat::new_units_added:          43
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              42
";

    #[test]
    fn libfuzzer_statistics_are_read() {
        assert_eq!(
            parse_stats(OUTPUT),
            Some(Stats {
                runs: 20339,
                exec_per_sec: 2033,
                cov: 1312,
                ft: 2101,
                corpus: 44,
                seconds: 10,
            })
        );
        assert_eq!(parse_stats("no libFuzzer here"), None);
    }

    #[test]
    fn every_target_is_a_binary_of_the_fuzz_crate_with_seeds() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
        for (t, _) in TARGETS {
            assert!(
                manifest.contains(&format!("name = \"{t}\"")),
                "fuzz/Cargo.toml has no [[bin]] {t}"
            );
            let seeds = fuzz_dir().join("seeds").join(t);
            assert!(
                std::fs::read_dir(&seeds).is_ok_and(|mut d| d.next().is_some()),
                "no seeds in {}",
                seeds.display()
            );
        }
    }
}
