//! `cargo xtask bench`: what one BUFFER_EXCHANGE costs a built add-on, as a Haiku kernel
//! engineer reads it: the instructions of the add-on's own code, the kernel calls it makes
//! (spinlock pairs, semaphore operations, `user_memcpy` calls and bytes, `system_time`) and
//! the virtio queue calls, per rate, channel count and direction; and what the simulator
//! around it costs.
//!
//! The workload is `haiku-sim`'s example `addon_bench` (release build): the add-on loaded by
//! the simulator, driven by the media add-on's exchange loop. It counts the add-on's calls
//! itself ([`haiku_sim::meter`]). Instructions come from callgrind, run twice with different
//! exchange counts so set-up cancels out, its profile written per instruction address
//! (`--dump-instr=yes`):
//! - the add-on's own: the instructions at addresses in its code segment (the loader maps
//!   the image anonymously, so callgrind names no object for it; the workload prints where
//!   the code is);
//! - the exchange's total: everything inside `meter::driver_code` (every call into the
//!   add-on: its `control` hook and its interrupt callbacks) less what is inside
//!   `meter::device_code` (the device model's work behind a queue call) and
//!   `meter::waiting` (a blocking wait, where time moves and the device model runs): the
//!   add-on and the simulated kernel's work for it;
//! - the whole process per simulated second: what long simulations (soak, fuzzing) cost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cargo, root, Result};

/// Options of `cargo xtask bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// An add-on to measure (repeat to compare several in one run; default: the one
    /// `cargo xtask build-haiku` builds).
    #[arg(long)]
    pub addon: Vec<PathBuf>,
    /// Sample rates in Hz (repeatable; default 8000, 48000 and 384000).
    #[arg(long)]
    pub rate: Vec<u32>,
    /// Channel counts (repeatable; default 2 and 8).
    #[arg(long)]
    pub channels: Vec<u8>,
    /// Directions: `play` (an output stream only) or `duplex` (repeatable; default both).
    #[arg(long, value_name = "play|duplex")]
    pub mode: Vec<String>,
    /// A built `addon_bench` to run instead of this tree's (another revision's simulator,
    /// built there with `cargo build --release -p haiku-sim --example addon_bench`), to
    /// compare simulators with the same add-on. Repeat it once per `--addon` to pair them:
    /// the first add-on runs in the first workload, and so on (a revision against another,
    /// simulator and add-on both, in one run).
    #[arg(long)]
    pub workload: Vec<PathBuf>,
}

/// Exchange counts of the two callgrind runs whose difference is measured.
const RUNS: (u32, u32) = (50, 250);

/// Built `addon_bench`.
fn build() -> Result<PathBuf> {
    let status = cargo()
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "haiku-sim",
            "--example",
            "addon_bench",
        ])
        .status()?;
    if !status.success() {
        return Err("building haiku-sim's example addon_bench failed".into());
    }
    Ok(root().join("target/release/examples/addon_bench"))
}

/// One run of the workload: what it printed.
#[derive(Debug, Default)]
struct Printed {
    code: (u64, u64),
    periods: (u64, u64),
    sim_us: i64,
    calls: HashMap<String, u64>,
    user_copy_bytes: u64,
    xruns: u64,
    timing: (i64, i64, i64),
}

fn parse_printed(out: &str) -> Result<Printed> {
    let mut p = Printed::default();
    let num = |s: Option<&str>| -> Result<i64> {
        let s = s.ok_or("a short line")?;
        Ok(match s.strip_prefix("0x") {
            Some(h) => i64::from_str_radix(h, 16)?,
            None => s.parse()?,
        })
    };
    for line in out.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("code") => p.code = (num(w.next())? as u64, num(w.next())? as u64),
            Some("periods") => p.periods = (num(w.next())? as u64, num(w.next())? as u64),
            Some("sim_us") => p.sim_us = num(w.next())?,
            Some("call") => {
                let name = w.next().ok_or("call without a name")?.to_string();
                p.calls.insert(name, num(w.next())? as u64);
            }
            Some("user_copy_bytes") => p.user_copy_bytes = num(w.next())? as u64,
            Some("xruns") => p.xruns = num(w.next())? as u64,
            Some("timing") => p.timing = (num(w.next())?, num(w.next())?, num(w.next())?),
            _ => {}
        }
    }
    if p.code.1 <= p.code.0 {
        return Err(format!("the workload printed no code range:\n{out}").into());
    }
    Ok(p)
}

/// What a callgrind profile says.
#[derive(Debug, Default, PartialEq, Eq)]
struct Profile {
    /// Every instruction of the process.
    total: u64,
    /// Instructions at addresses in the add-on's code.
    addon: u64,
    /// Inclusive instructions of calls to each function, by name.
    inclusive: HashMap<String, u64>,
}

/// Reads a callgrind profile written with `--dump-instr=yes --compress-strings=no
/// --compress-pos=no` (callgrind's format: `docs/cl-format.html` of valgrind). A cost line
/// right after `calls=` is the inclusive cost of those calls; any other is the function's
/// own, at the instruction address that starts it.
fn parse_profile(text: &str, code: (u64, u64)) -> Result<Profile> {
    let mut p = Profile::default();
    let mut callee: Option<&str> = None;
    let mut after_calls = false;
    for (n, line) in text.lines().enumerate() {
        if let Some(s) = line.strip_prefix("summary:") {
            p.total = s.trim().parse()?;
        } else if let Some(f) = line.strip_prefix("cfn=") {
            callee = Some(f.trim());
        } else if line.starts_with("calls=") {
            after_calls = true;
        } else if line.starts_with("0x") {
            let mut w = line.split_whitespace();
            let addr = w.next().and_then(|a| u64::from_str_radix(&a[2..], 16).ok());
            let ir = w.nth(1).and_then(|c| c.parse::<u64>().ok());
            let (Some(addr), Some(ir)) = (addr, ir) else {
                return Err(format!("callgrind profile line {}: {line:?}", n + 1).into());
            };
            if after_calls {
                *p.inclusive
                    .entry(callee.unwrap_or("?").to_string())
                    .or_default() += ir;
                after_calls = false;
            } else if (code.0..code.1).contains(&addr) {
                p.addon += ir;
            }
        }
    }
    Ok(p)
}

impl Profile {
    fn incl(&self, f: &str) -> u64 {
        self.inclusive.get(f).copied().unwrap_or(0)
    }

    /// The exchange's total: the add-on and the kernel's work for it (see the module doc).
    fn exchange(&self) -> i64 {
        self.incl("haiku_sim::meter::driver_code") as i64
            - self.incl("haiku_sim::meter::device_code") as i64
            - self.incl("haiku_sim::meter::waiting") as i64
    }
}

fn run_once(
    bin: &Path,
    addon: &Path,
    c: &Config,
    exchanges: u32,
    dir: &Path,
) -> Result<(Printed, Profile)> {
    let file = dir.join(format!("callgrind.{exchanges}"));
    let out = Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--dump-instr=yes",
            "--compress-strings=no",
            "--compress-pos=no",
        ])
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(bin)
        .arg(addon)
        .args([
            c.rate.to_string(),
            c.channels.to_string(),
            c.mode.clone(),
            exchanges.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run valgrind (Debian: apt-get install valgrind): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} under callgrind ({c}) failed:\n{}",
            addon.display(),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let printed = parse_printed(&String::from_utf8_lossy(&out.stdout))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let profile = parse_profile(&text, printed.code)?;
    Ok((printed, profile))
}

/// One configuration measured.
#[derive(Debug, Clone)]
struct Config {
    rate: u32,
    channels: u8,
    mode: String,
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} Hz, {} ch, {}", self.rate, self.channels, self.mode)
    }
}

/// Per exchange, one add-on in one configuration.
#[derive(Debug)]
struct Row {
    periods: (u64, u64),
    addon: f64,
    exchange: f64,
    sim_per_second: f64,
    calls: HashMap<String, f64>,
    copy_bytes: f64,
    xruns: u64,
    timing: (i64, i64, i64),
}

impl Row {
    fn call(&self, name: &str) -> f64 {
        self.calls.get(name).copied().unwrap_or(0.0)
    }
}

fn measure(bin: &Path, addon: &Path, c: &Config, dir: &Path) -> Result<Row> {
    let (a, b) = RUNS;
    let (pa, fa) = run_once(bin, addon, c, a, dir)?;
    let (pb, fb) = run_once(bin, addon, c, b, dir)?;
    let n = f64::from(b - a);
    let per = |x: u64, y: u64| (y as f64 - x as f64) / n;
    let calls = pb
        .calls
        .iter()
        .map(|(k, &v)| (k.clone(), v as f64 / f64::from(b)))
        .collect();
    Ok(Row {
        periods: pb.periods,
        addon: per(fa.addon, fb.addon),
        exchange: (fb.exchange() - fa.exchange()) as f64 / n,
        sim_per_second: (fb.total as f64 - fa.total as f64) * 1e6
            / (pb.sim_us - pa.sim_us).max(1) as f64,
        calls,
        copy_bytes: pb.user_copy_bytes as f64 / f64::from(b),
        xruns: pb.xruns,
        timing: pb.timing,
    })
}

pub fn run(args: &BenchArgs) -> Result {
    let addons = if args.addon.is_empty() {
        vec![crate::haiku::build()?]
    } else {
        args.addon.clone()
    };
    for a in &addons {
        if !a.is_file() {
            return Err(format!("--addon {}: no such file", a.display()).into());
        }
    }
    let pick = |v: &[u32], d: &[u32]| if v.is_empty() { d.to_vec() } else { v.to_vec() };
    let rates = pick(&args.rate, &[8000, 48000, 384000]);
    let channels: Vec<u8> = if args.channels.is_empty() {
        vec![2, 8]
    } else {
        args.channels.clone()
    };
    let modes: Vec<String> = if args.mode.is_empty() {
        vec!["play".into(), "duplex".into()]
    } else {
        args.mode.clone()
    };
    for m in &modes {
        if m != "play" && m != "duplex" {
            return Err(format!("--mode {m:?}: play or duplex").into());
        }
    }
    let valid = crate::simcmd::hmulti_rates();
    for &r in &rates {
        crate::simcmd::check_rate("--rate", r, &valid, "a rate hmulti has a bit for")?;
    }
    for &c in &channels {
        crate::simcmd::check_channels("--channels", u16::from(c))?;
    }
    for w in &args.workload {
        if !w.is_file() {
            return Err(format!("--workload {}: no such file", w.display()).into());
        }
    }
    let bins = match args.workload.len() {
        0 => vec![build()?; addons.len()],
        1 => vec![args.workload[0].clone(); addons.len()],
        n if n == addons.len() => args.workload.clone(),
        n => {
            return Err(format!(
                "{n} --workload for {} --addon: give one, or one per --addon",
                addons.len()
            )
            .into())
        }
    };
    let dir = tempfile::tempdir()?;
    println!(
        "per BUFFER_EXCHANGE, 16-bit samples; instructions from callgrind ({} minus {} \
         exchanges)",
        RUNS.1, RUNS.0
    );
    for (i, (a, bin)) in addons.iter().zip(&bins).enumerate() {
        println!("[{}] {} in {}", i + 1, a.display(), bin.display());
    }
    println!(
        "{:<22} {:>3} {:>10} {:>9} {:>9} {:>6} {:>6} {:>6} {:>11} {:>6} {:>7} {:>10} {:>6} {:>6}",
        "configuration",
        "add",
        "periods",
        "add-on",
        "exchange",
        "share",
        "spin",
        "sem",
        "user_memcpy",
        "time",
        "queue",
        "sim/sim-s",
        "xruns",
        "err99"
    );
    for &rate in &rates {
        for &ch in &channels {
            for mode in &modes {
                let c = Config {
                    rate,
                    channels: ch,
                    mode: mode.clone(),
                };
                for (i, (addon, bin)) in addons.iter().zip(&bins).enumerate() {
                    let r = measure(bin, addon, &c, dir.path())?;
                    let sem = r.call("acquire_sem")
                        + r.call("acquire_sem_etc")
                        + r.call("release_sem")
                        + r.call("release_sem_etc");
                    let queue = r.call("queue_request")
                        + r.call("queue_request_v")
                        + r.call("queue_dequeue");
                    println!(
                        "{:<22} {:>3} {:>10} {:>9.0} {:>9.0} {:>5.0}% {:>6.1} {:>6.1} {:>4.1}/{:<6.0} {:>6.1} {:>7.1} {:>9.2}M {:>6} {:>6}",
                        c.to_string(),
                        i + 1,
                        format!("{}x{}", r.periods.0, r.periods.1),
                        r.addon,
                        r.exchange,
                        100.0 * r.addon / r.exchange.max(1.0),
                        r.call("acquire_spinlock") + r.call("try_acquire_spinlock"),
                        sem,
                        r.call("user_memcpy"),
                        r.copy_bytes,
                        r.call("system_time"),
                        queue,
                        r.sim_per_second / 1e6,
                        r.xruns,
                        r.timing.1,
                    );
                }
            }
        }
    }
    println!(
        "add-on: instructions in the add-on's code; exchange: those and the simulated \
         kernel's for its calls (not the device model, not waiting); share: add-on / \
         exchange; spin: spinlock pairs; sem: semaphore acquires and releases; \
         user_memcpy: calls/bytes; time: system_time calls; queue: virtio queue requests \
         and dequeues; sim/sim-s: the whole simulator's instructions (millions) per \
         simulated second; xruns: the device's, in the longer run; err99: the 99th percentile \
         of played_real_time's error against the device's ground truth (µs)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile in callgrind's format as `--dump-instr=yes --compress-strings=no
    /// --compress-pos=no` writes it (written by hand from the format's description).
    const PROFILE: &str = "\
version: 1
positions: instr line
events: Ir
summary: 1000

ob=/bin/x
fn=main
0x1000 0 10
cfn=haiku_sim::meter::driver_code
calls=2 0x2000 0
0x1004 0 700
fn=haiku_sim::meter::driver_code
0x2000 0 4
cob=???
cfn=0x0000000000005000
calls=2 0x5000 0
0x2004 0 690
ob=???
fn=0x0000000000005000
0x5000 0 300
0x5010 0 200
cob=/bin/x
cfn=haiku_sim::meter::waiting
calls=1 0x3000 0
0x5020 0 150
0x5024 0 20
";

    #[test]
    fn a_profile_splits_into_the_addon_and_inclusive_calls() {
        let p = parse_profile(PROFILE, (0x5000, 0x6000)).unwrap();
        assert_eq!(p.total, 1000);
        // 300 + 200 + 20 at the add-on's addresses; the call's 150 is not its own.
        assert_eq!(p.addon, 520);
        assert_eq!(p.incl("haiku_sim::meter::driver_code"), 700);
        assert_eq!(p.incl("haiku_sim::meter::waiting"), 150);
        assert_eq!(p.exchange(), 550);
    }

    #[test]
    fn the_workloads_lines_are_read() {
        let p = parse_printed(
            "code 0x5000 0x6000\nperiods 480 4\nsim_us 2000\ncall acquire_spinlock 56\n\
             user_copy_bytes 608\nxruns 0\ntiming 1 2 3\n",
        )
        .unwrap();
        assert_eq!(p.code, (0x5000, 0x6000));
        assert_eq!(p.periods, (480, 4));
        assert_eq!(p.calls["acquire_spinlock"], 56);
        assert_eq!(p.timing, (1, 2, 3));
        assert!(parse_printed("sim_us 5\n").is_err());
    }
}
